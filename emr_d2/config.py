"""Config keys of emr_d2: every key is defined here, once, with its default and meaning."""
from __future__ import annotations

from detectron2.config import CfgNode as CN
from detectron2.projects.point_rend import add_pointrend_config

from .linking.options import LinkOptions

# The linking keys' defaults have one home, LinkOptions (the Python API links with them too).
LINK_DEFAULTS = LinkOptions()


# Switches replaced by another key: {old key: what replaces it}.
REPLACED_SWITCHES = {
    "MODEL.ROI_MASK_HEAD.NEIGHBOR_MASKS": 'MODEL.ROI_MASK_HEAD.NAME "NeighborMaskHead"',
}


def add_emr_config(cfg: CN) -> None:
    """Add the emr_d2 keys to a detectron2 config (in place).

    Detectron2 keys that emr_d2 reuses as they are: INPUT.MIN_SIZE_TRAIN / MAX_SIZE_TRAIN /
    MIN_SIZE_TRAIN_SAMPLING (scale jitter), INPUT.CROP.* (random crop), INPUT.RANDOM_FLIP,
    INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST (0 keeps the native size),
    DATALOADER.FILTER_EMPTY_ANNOTATIONS (the base config sets it False: slices without any nucleus
    are kept for training, they matter in 3D), MODEL.PIXEL_MEAN / PIXEL_STD (the base config sets
    one value for every slice of the per-volume normalised input). Only keys are added here.
    """
    _c = cfg
    add_pointrend_config(_c)  # detectron2's PointRend keys (MODEL.POINT_HEAD.*, ROI_MASK_HEAD.*)

    # ---------------------------------------------------------------- input: the N-slice stack
    # Number of slices the model sees: the centre slice z and its neighbours z-N//2 .. z+N//2
    # (for even N the window is z-N//2 .. z+N//2-1). 1 is plain 2D Mask R-CNN.
    _c.INPUT.NUM_SLICES = 5
    # Explicit slice offsets of the window, e.g. [-2, 0, 2]: NUM_SLICES sorted integers with 0 at
    # position NUM_SLICES // 2. Empty: the N adjacent slices (offsets -N//2 .. N - N//2 - 1).
    _c.INPUT.SLICE_OFFSETS = []
    # Spacing of the window's slices in micrometres (> 0; instead of SLICE_OFFSETS): the default
    # offsets times round(SLICE_SPACING_UM / z voxel size), at least 1 slice, per dataset.
    _c.INPUT.SLICE_SPACING_UM = 0.0
    # In-plane pixel size (micrometres) the model works at: every slice is resized from its
    # dataset's pixel size (voxel_size.json, a known CTC dataset, or --voxel-size) to this before
    # the network, and predictions are mapped back to the native grid. 0: native pixels.
    _c.INPUT.PIXEL_SIZE_UM = 0.0
    # How slices outside the volume are filled: "replicate" (nearest edge slice),
    # "zero" (normalised value 0) or "reflect" (mirror at the edge, without repeating it).
    _c.INPUT.SLICE_PADDING = "replicate"
    # Per-volume intensity normalisation: these percentiles of the whole volume map to 0 and 1.
    _c.INPUT.NORM_PERCENTILES = (1.0, 99.8)
    # Scale jitter: each training window is resized by a factor drawn uniformly in this range
    # (after INPUT.MIN_SIZE_TRAIN resizing; (1.0, 1.0) turns it off).
    _c.INPUT.SCALE_JITTER = (1.0, 1.0)
    # Random 90-degree rotations (with INPUT.RANDOM_FLIP this covers all 8 dihedral views).
    _c.INPUT.RANDOM_ROT90 = True
    # Intensity augmentation, drawn once per window and applied to all N slices alike.
    _c.INPUT.INTENSITY_AUG = CN()
    _c.INPUT.INTENSITY_AUG.ENABLED = True
    # Gamma drawn log-uniformly in this range, applied to the normalised image clipped to [0, 1].
    _c.INPUT.INTENSITY_AUG.GAMMA = (0.7, 1.4)
    # Multiplicative contrast drawn uniformly in this range, around the window mean.
    _c.INPUT.INTENSITY_AUG.CONTRAST = (0.8, 1.25)
    # Standard deviation of additive Gaussian noise, drawn uniformly in [0, NOISE_STD].
    _c.INPUT.INTENSITY_AUG.NOISE_STD = 0.03

    # Centre-slice degradation (training only): with probability PROB the centre slice of a window
    # is replaced by a blurred (Gaussian, BLUR_SIGMA px), noisier (+ NOISE_STD) or dimmed (x DIM)
    # copy, one of the three at random, while its reference masks stay: the neighbours must help.
    _c.INPUT.CENTER_DEGRADE = CN()
    _c.INPUT.CENTER_DEGRADE.PROB = 0.0
    _c.INPUT.CENTER_DEGRADE.BLUR_SIGMA = 3.0
    _c.INPUT.CENTER_DEGRADE.NOISE_STD = 0.3
    _c.INPUT.CENTER_DEGRADE.DIM = 0.3

    # ---------------------------------------------------------------- neighbour-mask head
    # MODEL.ROI_MASK_HEAD.NAME "NeighborMaskHead": the mask head also predicts every centre-slice
    # object's mask in each neighbour slice of the window (one more mask logit per slice offset),
    # trained against the 3D reference; no-op for N = 1. Predicted neighbour masks feed
    # TEST.CTC.LINKING "predicted". Weight of its neighbour-mask loss (binary cross-entropy, mean
    # over neighbour slices):
    _c.MODEL.ROI_MASK_HEAD.NEIGHBOR_LOSS_WEIGHT = 1.0
    # Keys that models trained by earlier versions carry in their config.yaml: ignored when off,
    # refused when on (check_replaced_keys).
    for key in REPLACED_SWITCHES:
        _c.register_deprecated_key(key)

    # ---------------------------------------------------------------- z-extent head
    # Every detection also predicts how far, in micrometres, its object reaches below and above
    # its slice in the 3D reference: ``pred_z_extent`` (R, 2) = (down to the first slice, up to
    # the last). A small branch on the (fused) mask-pooler features, trained with the ROI heads
    # against the 3D reference (a side cut by the stack end is not trained); needs an ROI head
    # class that has it (SliceStackROIHeads, SliceFusionROIHeads). Feeds TEST.CTC.EXTENT_*.
    _c.MODEL.Z_EXTENT = CN()
    _c.MODEL.Z_EXTENT.ENABLED = False
    # Targets are divided by this typical reach of a nucleus before the smooth L1 loss.
    _c.MODEL.Z_EXTENT.SCALE_UM = 4.0
    _c.MODEL.Z_EXTENT.LOSS_WEIGHT = 1.0
    _c.MODEL.Z_EXTENT.FC_DIM = 256

    # ---------------------------------------------------------------- datasets and splits
    # "<dataset>_<seq>_train" / "_val": the first (1 - VAL_FRACTION) of the frames of a sequence
    # train, the last VAL_FRACTION validate, and GAP frames between them belong to neither.
    _c.DATASETS.SPLIT = CN()
    _c.DATASETS.SPLIT.VAL_FRACTION = 0.2
    _c.DATASETS.SPLIT.GAP = 5
    # Dataset(s) on which the validation loss is computed every TEST.VAL_LOSS_PERIOD iterations.
    _c.DATASETS.VAL = ()

    # ---------------------------------------------------------------- slice fusion
    _c.MODEL.FUSION = CN()
    # Backbone run on every slice by the shared-backbone fusion variants (early, late, attention).
    _c.MODEL.FUSION.SLICE_BACKBONE = "build_resnet_fpn_backbone"
    # Fusion module (FUSION_REGISTRY, by class name) that merges the N feature maps in early
    # fusion: MLPFusion | WindowedFusion | PixelAttentionFusion | CrossSliceAttentionFusion |
    # Conv3dFusion | MeanFusion | CenterFusion.
    _c.MODEL.FUSION.NAME = "MLPFusion"
    # FPN levels where the slices are fused (early fusion, and late fusion's proposal features);
    # other levels pass the centre slice's features. Empty: every level.
    _c.MODEL.FUSION.LEVELS = []
    # Early fusion: FPN levels that the backbone also outputs unfused, as "<level>_center" (the
    # centre slice's own features), e.g. for PointRend's points: MODEL.POINT_HEAD.IN_FEATURES.
    _c.MODEL.FUSION.CENTER_OUTPUTS = []
    # One fusion module per FPN level (True) or one module shared by all levels (False).
    _c.MODEL.FUSION.PER_LEVEL = False
    # Initial static per-slice logits: "zero" (uniform), "only_center" (centre slice only)
    # or "gaussian" (exp(-dz^2 / (2 sigma^2)) prior over the window position dz).
    _c.MODEL.FUSION.STATIC_INIT = "gaussian"
    _c.MODEL.FUSION.GAUSSIAN_SIGMA = 1.0
    # Keep the static logits fixed during training.
    _c.MODEL.FUSION.FREEZE_STATIC = False
    # Hidden width of the MLPs / 1x1 convolutions that compute input-dependent slice logits.
    _c.MODEL.FUSION.HIDDEN_DIM = 64
    # Window size (in feature-map pixels) of WindowedFusion.
    _c.MODEL.FUSION.WINDOW_SIZE = 4
    # Recompute the per-slice backbone's activations in the backward pass instead of keeping them
    # (activation checkpointing, one slice at a time): less memory for N-slice models, more time.
    _c.MODEL.FUSION.CHECKPOINT_SLICES = False
    # Training logs the mean weight of every slice offset to the EventStorage this often.
    _c.MODEL.FUSION.LOG_PERIOD = 20

    # Cross-slice attention (CrossSliceAttentionFusion): attention heads.
    _c.MODEL.FUSION.ATTENTION = CN()
    _c.MODEL.FUSION.ATTENTION.NUM_HEADS = 4

    # Late fusion (ROI heads "SliceFusionROIHeads"): every proposal is pooled from every slice's
    # features and the N ROI features are merged by this FUSION_REGISTRY module:
    # MeanFusion | CenterFusion | Conv3dFusion | MLPFusion.
    _c.MODEL.FUSION.LATE = CN()
    _c.MODEL.FUSION.LATE.NAME = "MeanFusion"
    # Also fuse the box head's ROI features (the mask head's are always fused).
    _c.MODEL.FUSION.LATE.BOX = False
    # Proposals from the "center" slice's features, or from features "fused" by MODEL.FUSION.NAME.
    _c.MODEL.FUSION.LATE.PROPOSALS_FROM = "center"

    # ---------------------------------------------------------------- intensity front-end
    _c.MODEL.INTENSITY = CN()
    # "none" | "gamma" (learnable gamma) | "gamma_contrast" (learnable gamma and [low, high]
    # contrast limits), applied to the normalised input before pixel mean/std and the backbone.
    _c.MODEL.INTENSITY.NAME = "none"

    # ---------------------------------------------------------------- test-time augmentation
    # TEST.AUG.ENABLED (detectron2's key, off by default) predicts every slice stack under each of
    # these symmetries of the slice plane and merges them (modeling/tta.py), in evaluation,
    # tools/predict.py and the napari widget: "identity", "hflip", "vflip", "rot90", "rot180",
    # "rot270", "transpose", "antitranspose". detectron2's TEST.AUG.MIN_SIZES / MAX_SIZE / FLIP
    # are not read: a slice is seen at INPUT.PIXEL_SIZE_UM, and hflip is one of these.
    _c.TEST.AUG.TRANSFORMS = ["identity", "hflip", "vflip", "rot180"]

    # ---------------------------------------------------------------- CTC evaluation
    _c.TEST.CTC = CN()
    # z-linking of per-slice instances into 3D objects, named by the similarity that the
    # Hungarian assignment between slices maximises: "iou" (IoU of the masks), "overlap"
    # (intersection over the smaller mask), "predicted" (IoU of each object's predicted neighbour
    # masks with the other slice's objects; needs MODEL.ROI_MASK_HEAD.NAME NeighborMaskHead); or
    # "connected" (3D components of the union of all masks, no assignment).
    _c.TEST.CTC.LINKING = LINK_DEFAULTS.strategy
    # Minimal IoU (iou, predicted) or overlap (overlap) for two slices' masks to be linked.
    _c.TEST.CTC.LINK_THRESHOLD = LINK_DEFAULTS.threshold
    # How many slices back an object may be continued from, bridging missed slices.
    _c.TEST.CTC.LOOK_BACK = LINK_DEFAULTS.look_back
    # Fill slices bridged by LOOK_BACK with the object's predicted neighbour mask there (predicted
    # linking), else with the intersection of the object's masks around the gap.
    _c.TEST.CTC.FILL_GAPS = LINK_DEFAULTS.fill_gaps
    # Objects present in fewer slices than this are dropped.
    _c.TEST.CTC.MIN_SLICES = LINK_DEFAULTS.min_slices
    # Split a linked object where its area along z has an interior minimum at least this fraction
    # below its largest area on both sides (nuclei are convex: such a neck is the cap of one
    # nucleus linked to the next); 0 turns it off. 0.15: what the calibration chose most often.
    _c.TEST.CTC.SPLIT_DEPTH = LINK_DEFAULTS.split_depth
    # With a z-extent head: two detections are not linked where one's predicted extent ends more
    # than this many micrometres before the other's begins (0: extents do not gate linking).
    _c.TEST.CTC.EXTENT_GATE_UM = LINK_DEFAULTS.extent_gate_um
    # With a z-extent head: an object's end slice is removed while it lies more than this many
    # micrometres beyond where the detections of the 3 slices next to it say the object ends
    # (their median): haze caps. 0: nothing is removed.
    _c.TEST.CTC.EXTENT_TRIM_UM = LINK_DEFAULTS.extent_trim_um
    # Per-slice instances below this score are dropped before linking.
    _c.TEST.CTC.SCORE_THRESHOLD = 0.5
    # Write <seq>_RES/maskTTT.tif for every evaluated frame.
    _c.TEST.CTC.WRITE_RES = True
    # Whole-volume inference computes each slice's backbone features once and reuses them in
    # every window (shared-backbone fusion variants only); False runs every window on its own.
    _c.TEST.CTC.CACHE_FEATURES = True
    # Windows per forward pass in whole-volume inference.
    _c.TEST.CTC.BATCH_WINDOWS = 4
    # Also run detectron2's COCOEvaluator (per-slice segm and bbox AP) on CTC datasets.
    _c.TEST.CTC.COCO_AP = True
    # Choose the linking (LINKING, LINK_THRESHOLD, LOOK_BACK, MIN_SLICES) on DATASETS.VAL before
    # every evaluation during training and at its end, over the TEST.CTC.CALIBRATION grid; the
    # choice goes to OUTPUT_DIR/linking.json and OUTPUT_DIR/config.yaml. The test is never read.
    _c.TEST.CTC.CALIBRATE_LINKING = False
    # Apply the linking.json found beside MODEL.WEIGHTS (keys given on the command line win).
    _c.TEST.CTC.USE_CALIBRATED_LINKING = True
    # The calibration grid: linkers x thresholds x look-backs x minimum slices ("connected"
    # ignores thresholds and look-backs).
    _c.TEST.CTC.CALIBRATION = CN()
    _c.TEST.CTC.CALIBRATION.LINKERS = ["iou", "overlap", "connected"]
    _c.TEST.CTC.CALIBRATION.THRESHOLDS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    _c.TEST.CTC.CALIBRATION.LOOK_BACKS = [0, 1, 2]
    _c.TEST.CTC.CALIBRATION.MIN_SLICES = [1, 2, 3]
    _c.TEST.CTC.CALIBRATION.SPLIT_DEPTHS = [0.0, 0.15, 0.25, 0.35]
    # Extent gates and trims tried (only for a model with MODEL.Z_EXTENT.ENABLED).
    _c.TEST.CTC.CALIBRATION.EXTENT_GATES_UM = [0.0, 1.0, 2.0]
    _c.TEST.CTC.CALIBRATION.EXTENT_TRIMS_UM = [0.0, 0.25, 0.75]

    # ---------------------------------------------------------------- training engine
    # Mixed precision (with detectron2's SOLVER.AMP.ENABLED): "auto" (bfloat16 on the CPU and on
    # GPUs that support it, else float16), "bfloat16" or "float16" (with gradient scaling).
    _c.SOLVER.AMP.PRECISION = "auto"
    # "SGD" (detectron2's) or "ADAMW". Fusion modules get no weight decay with either.
    _c.SOLVER.OPTIMIZER = "ADAMW"
    # Metric that picks the best checkpoint ("" disables BestCheckpointer), and its direction.
    _c.TEST.BEST_METRIC = "ctc/SEG"
    _c.TEST.BEST_METRIC_MODE = "max"
    # Stop training when the best metric has not improved for this many evaluations (0: never).
    _c.TEST.EARLY_STOP_PATIENCE = 0
    # Compute the loss on DATASETS.VAL every this many iterations (0: never).
    _c.TEST.VAL_LOSS_PERIOD = 0
    # Number of batches of DATASETS.VAL that make one validation-loss estimate.
    _c.TEST.VAL_LOSS_BATCHES = 10
