"""Training engine: Trainer(DefaultTrainer), its hooks, config setup and whole-volume inference."""
from .inference import inference_on_volumes
from .setup import setup_config
from .trainer import Trainer, build_mapper

__all__ = ["Trainer", "build_mapper", "inference_on_volumes", "setup_config"]
