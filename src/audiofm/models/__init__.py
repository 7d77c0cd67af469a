"""Models: registry, patching, masking, backbones, encoder and the MSM model."""

from .encoder import AudioEncoder, EncoderConfig
from .msm import ModelConfig, MSMModel, count_parameters
from .registry import build_model, create_model, list_models, model_config

__all__ = [
    "AudioEncoder",
    "EncoderConfig",
    "MSMModel",
    "ModelConfig",
    "build_model",
    "count_parameters",
    "create_model",
    "list_models",
    "model_config",
]
