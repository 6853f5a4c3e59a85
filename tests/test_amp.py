"""Mixed precision on the CPU (bfloat16 autocast) for every fusion family, and activation
checkpointing of the per-slice backbone."""
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from emr_d2.engine import build_mapper
from emr_d2.engine import Trainer
from emr_d2.engine.amp import MixedPrecisionTrainer

from helpers import tiny_cfg

FAMILIES = ["baseline_2d", "channel_fusion", "mlp_fusion", "late_fusion_mlp",
            "cross_slice_attention",
            "neighbor_fusion"]


def batch(cfg):
    np.random.seed(0)
    records = sorted(DatasetCatalog.get("TINY_01"), key=lambda r: -len(r["annotations"]))[:2]
    mapper = build_mapper(cfg, is_train=True)
    return [mapper(r) for r in records]


def losses(model, inputs, autocast: bool) -> dict:
    torch.manual_seed(1)  # the same proposal and ROI sampling in both precisions
    with EventStorage(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        return {k: float(v.detach()) for k, v in model(inputs).items()}


@pytest.mark.parametrize("variant", FAMILIES)
def test_bfloat16_autocast_losses_are_close_to_float32(registered_tiny, variant):
    torch.manual_seed(0)
    cfg = tiny_cfg(
        variant,
        1 if variant == "baseline_2d" else 3,
        ["INPUT.RANDOM_ROT90", "False", "INPUT.INTENSITY_AUG.ENABLED", "False"],
    )
    model = build_model(cfg)
    inputs = batch(cfg)
    full, mixed = losses(model, inputs, False), losses(model, inputs, True)
    assert set(full) == set(mixed)
    assert sum(mixed.values()) == pytest.approx(sum(full.values()), rel=0.05)
    for key in full:
        assert mixed[key] == pytest.approx(full[key], rel=0.15, abs=0.02), key


def test_mixed_precision_trainer_steps_on_the_cpu(registered_tiny):
    torch.manual_seed(0)
    cfg = tiny_cfg("mlp_fusion", 3, ["DATASETS.TRAIN", "('TINY_01',)", "SOLVER.IMS_PER_BATCH", "2",
                                     "SOLVER.AMP.ENABLED", "True"])
    model = build_model(cfg)
    optimizer = Trainer.build_optimizer(cfg, model)
    trainer = Trainer.build_step_trainer(cfg, model, Trainer.build_train_loader(cfg), optimizer)
    assert isinstance(trainer, MixedPrecisionTrainer) and trainer.precision == torch.bfloat16
    before = [p.detach().clone() for p in model.parameters()]
    with EventStorage() as storage:
        trainer.storage = storage
        trainer.iter = 0
        trainer.run_step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay float32


@pytest.mark.parametrize("variant", ["mlp_fusion", "late_fusion_center"])
def test_activation_checkpointing_gives_the_same_gradients(registered_tiny, variant):
    grads = []
    for checkpointed in (False, True):
        torch.manual_seed(0)
        cfg = tiny_cfg(variant, 3, ["MODEL.FUSION.CHECKPOINT_SLICES", str(checkpointed),
                                    "INPUT.RANDOM_ROT90", "False"])
        model = build_model(cfg)
        assert model.backbone.checkpoint_slices == checkpointed
        inputs = batch(cfg)
        torch.manual_seed(1)
        with EventStorage():
            sum(model(inputs).values()).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    plain, checkpointed = grads
    assert plain.keys() == checkpointed.keys() and len(plain) > 10
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-3, atol=1e-5, msg=name)
