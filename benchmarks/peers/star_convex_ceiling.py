"""How well StarDist-3D's star-convex polyhedra can draw a dataset's reference nuclei at all: each
reference object replaced by the polyhedron of its ray distances from its centroid
(``stardist.relabel_image_stardist3D``, StarDist's own check for choosing the number of rays),
with the rays the StarDist-3D peer trains with (:mod:`peer_stardist3d`: a golden spiral scaled
by the voxel size's anisotropy). The SEG of that result against the reference is the ceiling of
a perfectly trained StarDist-3D with those rays.

Runs in the StarDist environment (``make peers``)::

    .peers/stardist/bin/python benchmarks/peers/star_convex_ceiling.py \\
        datasets/Fluo-N3DH-CHO-sample/02_GT output/star_convex/Fluo-N3DH-CHO-sample \\
        --voxel-size 1.0 0.202 0.202 --rays 32 96 128

writes ``OUT/rays<N>/maskTTT.tif`` for every reference frame (a CTC result folder, so that
``benchmarks/seg_loss.py OUT/rays96 GT`` tells where the polyhedra lose) and ``OUT/ceiling.csv``
(rays, SEG, frames), and prints the SEG per number of rays.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys

import numpy as np

try:
    from stardist import Rays_GoldenSpiral, relabel_image_stardist3D
except ImportError:
    sys.exit("error: stardist is not installed in this Python: run this script with "
             ".peers/stardist/bin/python (make peers)")

from peer_common import seg, write_result_folder
from peer_stardist3d import voxel_anisotropy

from emr_d2.atomic import atomic_write
from emr_d2.cli import add_debug_argument, add_voxel_size_argument, check_new_output_folder, run_cli
from emr_d2.data.ctc import list_gt, read_label_volume
from emr_d2.evaluation.ctc_folders import reference_subfolder


def peer_rays(n_rays: int, voxel_um):
    """The StarDist-3D peer's rays for ``voxel_um``: ``n_rays`` on a golden spiral scaled by the
    voxel anisotropy."""
    return Rays_GoldenSpiral(n_rays, anisotropy=voxel_anisotropy(voxel_um))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("gt", help="a <seq>_GT folder (or its SEG folder) of 3D reference volumes")
    parser.add_argument("out", help="folder for one result folder per number of rays")
    add_voxel_size_argument(parser, "voxel size of the reference volumes")
    parser.add_argument("--rays", nargs="+", type=int, default=[96],
                        help="numbers of rays to try (the peer trains with 96)")
    parser.add_argument("--overwrite", action="store_true")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    if args.voxel_size is None:
        parser.error("--voxel-size Z Y X is required (the rays' anisotropy comes from it)")
    if min(args.rays) < 4:
        parser.error(f"--rays: a polyhedron needs at least 4 rays; got {min(args.rays)}")
    seg_dir = reference_subfolder(args.gt, "SEG")
    frames = {t: f.volume_path for t, f in list_gt(seg_dir).items() if f.volume_path}
    if not frames:
        raise FileNotFoundError(f"{seg_dir}: no 3D reference volume (man_segTTT.tif)")
    check_new_output_folder(args.out, args.overwrite)
    references = {t: np.asarray(read_label_volume(p, memmap=False), dtype=np.int32)
                  for t, p in sorted(frames.items())}
    rows = []
    for n_rays in args.rays:
        rays = peer_rays(n_rays, args.voxel_size)
        # each object redrawn as the polyhedron of its ray distances from its centroid
        drawn = {t: relabel_image_stardist3D(labels, rays).astype(np.int32)
                 for t, labels in references.items()}
        write_result_folder(os.path.join(args.out, f"rays{n_rays}"), drawn.items())
        rows.append(dict(rays=n_rays, SEG=seg(drawn.values(), references.values()),
                         frames=len(drawn)))
        print(f"{n_rays} rays: SEG {rows[-1]['SEG']:.3f} over {len(drawn)} frames", flush=True)

    def write_rows(f):
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)

    atomic_write(os.path.join(args.out, "ceiling.csv"), write_rows, "w")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
