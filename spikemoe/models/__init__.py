"""Registered model factories. Importing this package registers every family."""
from . import spike_driven, spikformer  # noqa: F401  (registration side effect)
from .output import ModelOutput
from .registry import create_model, list_models, register_model
from .spiking_vit import SpikingVisionTransformer

__all__ = ["ModelOutput", "SpikingVisionTransformer", "create_model", "list_models",
           "register_model"]
