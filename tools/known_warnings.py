"""Silences the known third-party warnings in the command-line tools (not in the library): import
this first in a tool, before torch, detectron2 or emr_d2 are imported."""
import logging
import warnings

KNOWN_THIRD_PARTY_WARNINGS = [
    # PyTorch 2.1x deprecates torch.jit.script, which detectron2 and fvcore use at import time.
    (FutureWarning, r"`torch\.jit\.script` is deprecated"),
    # detectron2's anchor generator calls torch.meshgrid without the indexing argument.
    (UserWarning, r"torch\.meshgrid: in an upcoming release"),
]
# Logged (not warned) by torch when detectron2's ROI pooler asks whether it is being traced.
KNOWN_THIRD_PARTY_LOG_LINES = [("torch.fx._symbolic_trace", "is_fx_tracing will return true")]

for category, message in KNOWN_THIRD_PARTY_WARNINGS:
    warnings.filterwarnings("ignore", message=message, category=category)
for logger_name, start in KNOWN_THIRD_PARTY_LOG_LINES:
    logging.getLogger(logger_name).addFilter(lambda record,
                                             start=start: not record.getMessage().startswith(start))
