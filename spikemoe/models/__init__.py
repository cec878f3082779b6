"""Registered model factories. Importing this package registers every family."""
from ..contract import ModelOutput
from . import (  # noqa: F401  (registration side effect)
    causal_transformer,
    fusion,
    modular,
    modular_spikformer,
    spike_driven,
    spikformer,
    spikingformer,
    subjective_depth,
    subjective_timescale,
    vit_factories,
    vmoe,
)
from .registry import create_model, list_models, register_model, unregister_model
from .spiking_vit import SpikingVisionTransformer

__all__ = ["ModelOutput", "SpikingVisionTransformer", "create_model", "list_models",
           "register_model", "unregister_model"]
