"""Mixed-precision training on any device: detectron2's AMPTrainer with torch.autocast for the
model's device type, bfloat16 where the device supports it, gradient scaling only for float16."""
from __future__ import annotations

import time

import torch
from detectron2.engine import AMPTrainer

PRECISIONS = ("auto", "bfloat16", "float16")


def resolve_precision(name: str, device_type: str) -> torch.dtype:
    """SOLVER.AMP.PRECISION -> dtype; "auto" is bfloat16 on the CPU and on GPUs that support it
    (no gradient scaling needed, float32's range), else float16."""
    if name == "auto":
        supported = device_type == "cpu" or (device_type == "cuda"
                                             and torch.cuda.is_bf16_supported())
        return torch.bfloat16 if supported else torch.float16
    return {"bfloat16": torch.bfloat16, "float16": torch.float16}[name]


class MixedPrecisionTrainer(AMPTrainer):
    """AMPTrainer whose step runs the forward pass under ``torch.autocast(device_type, precision)``
    (CUDA or CPU) and scales the loss only for float16."""

    def __init__(self, model, data_loader, optimizer, precision: torch.dtype, device_type: str):
        scaler = torch.amp.GradScaler(device_type, enabled=precision == torch.float16)
        super().__init__(model, data_loader, optimizer, grad_scaler=scaler, precision=precision)
        self.device_type = device_type

    def run_step(self):
        assert self.model.training, "[MixedPrecisionTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        with torch.autocast(self.device_type, dtype=self.precision):
            loss_dict = self.model(data)
            losses = sum(loss_dict.values())
        self.optimizer.zero_grad()
        self.grad_scaler.scale(losses).backward()
        self.after_backward()
        self._write_metrics(loss_dict, data_time)
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()
