#!/usr/bin/env python
"""Where a result folder loses SEG, slice by slice: 1 - SEG split exactly by where each
reference object's lost voxels lie.

For a reference object R matched to S (the CTC's rule), 1 - J = |R xor S| / |R | S| is a sum over
planes of |R_z xor S_z| / |R | S|; each plane is put in one place relative to R: ``widest`` (R's
largest cross-section), ``inner`` (between the widest and an end), ``end`` (R's first or last
slice, when not the widest) and ``outside`` (planes where R is absent and S is painted: caps
beyond the reference). An unmatched reference object loses 1, put in ``missed``. The shares,
divided by the number of reference objects, add up to 1 - SEG; ``over`` is the part of a share
that S paints beyond R (the rest is R left unpainted). Per place it also reports the slice IoU
|R_z & S_z| / |R_z | S_z| of matched objects, the share of R's cross-sections S leaves empty, and
S_z / R_z (median and 90th percentile) where both are painted.

    python benchmarks/seg_loss.py RES_DIR [RES_DIR ...] GT_DIR [--csv OUT.csv]
"""
import argparse
import csv
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("EMR_D2_NO_REGISTER", "1")

from emr_d2.atomic import atomic_write  # noqa: E402
from emr_d2.cli import add_debug_argument, run_cli  # noqa: E402
from emr_d2.data.ctc import CTCFormatError, list_gt, list_results, read_label_volume  # noqa: E402
from emr_d2.evaluation.ctc_folders import reference_subfolder  # noqa: E402
from emr_d2.evaluation.seg import Contingency, pair_counts  # noqa: E402

PLACES = ("widest", "inner", "end", "outside", "missed")


def object_planes(gt: np.ndarray, res: np.ndarray) -> list[dict]:
    """One dict per reference object of a (Z, H, W) frame: ``place`` (Z,) names, ``gt``, ``res``,
    ``overlap`` (Z,) voxels per plane of R, of its matched S and of both, ``union`` (3D |R | S|);
    ``res``/``overlap`` are None for an unmatched R. One pass over the voxels (per-plane label
    pair counts), the CTC matching from the same counts."""
    pairs = pair_counts(gt, res, per_plane=True)
    table = Contingency.from_pairs(pairs)
    match = table.ctc_match()
    depth = gt.shape[0]

    def areas(ids: np.ndarray, labels: np.ndarray, keep: np.ndarray) -> np.ndarray:
        """(len(ids), Z) voxels per plane of each label, over the pairs ``keep``."""
        out = np.zeros((len(ids), depth), np.int64)
        np.add.at(out, (np.searchsorted(ids, labels[keep]), pairs.plane[keep]),
                  pairs.voxels[keep])
        return out

    gt_area = areas(table.gt_ids, pairs.gt, pairs.gt != 0)
    res_area = areas(table.res_ids, pairs.res, pairs.res != 0)
    both = (pairs.gt != 0) & (pairs.res != 0)
    g_index = np.searchsorted(table.gt_ids, pairs.gt[both])
    matched = match[g_index] == np.searchsorted(table.res_ids, pairs.res[both])
    overlap = np.zeros_like(gt_area)
    np.add.at(overlap, (g_index[matched], pairs.plane[both][matched]),
              pairs.voxels[both][matched])
    objects = []
    for g, s in enumerate(match):
        if s < 0:
            objects.append({"gt": gt_area[g], "res": None, "overlap": None, "place": None,
                            "union": None})
            continue
        present = np.flatnonzero(gt_area[g])
        place = np.full(depth, "outside", dtype=object)
        place[present] = "inner"
        place[[present[0], present[-1]]] = "end"
        place[int(np.argmax(gt_area[g]))] = "widest"
        objects.append({"gt": gt_area[g], "res": res_area[s], "overlap": overlap[g],
                        "place": place,
                        "union": int(gt_area[g].sum() + res_area[s].sum() - overlap[g].sum())})
    return objects


def loss_table(objects: list[dict]) -> dict:
    """Per place: ``loss`` (share of 1 - SEG, over all reference objects), ``over`` (the part of
    it painted beyond the reference), ``planes`` (reference cross-sections there; for outside:
    planes the result paints), ``iou`` (mean slice IoU),
    ``empty`` (share of reference cross-sections left empty), ``area_median`` / ``area_p90``
    (result / reference area where both are painted)."""
    loss, over = dict.fromkeys(PLACES, 0.0), dict.fromkeys(PLACES, 0.0)
    ious, empty, ratios, planes = ({p: [] for p in PLACES} for _ in range(4))
    for obj in objects:
        if obj["res"] is None:
            loss["missed"] += 1.0
            continue
        lost = (obj["gt"] + obj["res"] - 2 * obj["overlap"]) / obj["union"]
        for z, place in enumerate(obj["place"]):
            g, r, i = obj["gt"][z], obj["res"][z], obj["overlap"][z]
            if g == 0 and r == 0:
                continue
            loss[place] += lost[z]
            over[place] += (r - i) / obj["union"]
            planes[place].append(z)
            ious[place].append(i / (g + r - i))
            if g:
                empty[place].append(r == 0)
            if g and r:
                ratios[place].append(r / g)
    count = max(len(objects), 1)
    return {place: {
        "loss": loss[place] / count,
        "over": over[place] / count,
        "planes": len(planes[place]) if place != "missed" else int(loss["missed"]),
        "iou": float(np.mean(ious[place])) if ious[place] else float("nan"),
        "empty": float(np.mean(empty[place])) if empty[place] else float("nan"),
        "area_median": float(np.median(ratios[place])) if ratios[place] else float("nan"),
        "area_p90": float(np.percentile(ratios[place], 90)) if ratios[place] else float("nan"),
    } for place in PLACES}


def reference_volumes(gt_dir: str) -> dict[int, np.ndarray]:
    """{frame: (Z, H, W) reference labels} of every frame of ``gt_dir/SEG``, read once for all
    result folders; slice-wise references are refused (the places need whole objects)."""
    seg_dir = reference_subfolder(gt_dir, "SEG")
    references = list_gt(seg_dir)
    if not references:
        raise CTCFormatError(f"{seg_dir}: no reference frames (man_segTTT.tif) found")
    volumes = {}
    for frame, reference in references.items():
        if not reference.is_3d:
            raise CTCFormatError(f"{seg_dir}: frame {frame} has slice references only; the "
                                 "loss by place needs full-volume references (man_segTTT.tif)")
        volumes[frame] = np.asarray(read_label_volume(reference.volume_path))
    return volumes


def folder_objects(res_dir: str, references: dict[int, np.ndarray]) -> list[dict]:
    """:func:`object_planes` of every reference frame against ``res_dir/maskTTT.tif``."""
    results = list_results(res_dir)
    objects = []
    for frame, gt in sorted(references.items()):
        if frame not in results:
            raise CTCFormatError(f"{os.path.join(res_dir, f'mask{frame:03d}.tif')}: result frame "
                                 "missing")
        res_path = results[frame]
        res = np.asarray(read_label_volume(res_path))
        if gt.ndim != 3 or gt.shape != res.shape:
            raise CTCFormatError(f"{res_path}: shape {res.shape}, reference {gt.shape}; "
                                 "expected the same (Z, H, W)")
        objects += object_planes(gt, res)
    if not objects:
        raise CTCFormatError(f"{res_dir}: its reference frames hold no objects")
    return objects


def markdown(res_dir: str, seg: float, table: dict) -> str:
    """The table of one result folder and its SEG."""
    lines = [f"{res_dir}: SEG = {seg:.4f}", "",
             "| place | planes | share of 1 - SEG | painted beyond | slice IoU | empty "
             "| area median | area p90 |", "|---|---|---|---|---|---|---|---|"]
    for place, t in table.items():
        lines.append(f"| {place} | {t['planes']} | {t['loss']:.4f} | {t['over']:.4f} | "
                     f"{t['iou']:.3f} | {t['empty']:.2f} | {t['area_median']:.2f} | "
                     f"{t['area_p90']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("res_dir", nargs="+", help="result folders (maskTTT.tif), then GT_DIR")
    parser.add_argument("--csv", help="also write one row per result folder: SEG and every "
                        "place's figures (<place>_<figure>)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --csv")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    if len(args.res_dir) < 2:
        parser.error("give at least one result folder and the reference folder (GT_DIR)")
    *res_dirs, gt_dir = args.res_dir
    if args.csv and os.path.exists(args.csv) and not args.overwrite:
        raise FileExistsError(f"{args.csv}: exists (give --overwrite to replace it)")
    references = reference_volumes(gt_dir)
    rows = []
    for res_dir in res_dirs:
        if not os.path.isdir(res_dir):
            raise CTCFormatError(f"{res_dir}: no such result folder")
        table = loss_table(folder_objects(res_dir, references))
        seg = 1 - sum(t["loss"] for t in table.values())
        print(markdown(res_dir, seg, table) + "\n")
        rows.append({"res_dir": res_dir, "SEG": seg,
                     **{f"{place}_{key}": value for place, t in table.items()
                        for key, value in t.items()}})
    if args.csv:
        atomic_write(args.csv, lambda f: csv_rows(f, rows), "w")
    return 0


def csv_rows(f, rows: list[dict]) -> None:
    """Write rows (dicts with the same keys) as CSV to an open text file."""
    writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


if __name__ == "__main__":
    sys.exit(run_cli(main))
