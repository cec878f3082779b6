"""Spiking building blocks on time-major tensors: patch splitting, SSA/SDSA, MLP; and how
event frames enter ANN models (time folding)."""
from .attention import HeadwiseSpikingAttention
from .block import SpikingBlock
from .causal_transformer import CausalSelfAttention, DecoderBlock, LayerKV, RMSNorm, SwiGLU
from .kernels import sdsa_column_sum, ssa_scores_times_values
from .linear_bn import TokenLinearBN
from .mlp import SpikingMLP
from .patch_split import PAPER_POOLS, SpikingPatchSplit
from .time_folding import TIME_MODES, TimeFolding

__all__ = [
    "HeadwiseSpikingAttention", "PAPER_POOLS", "SpikingBlock", "SpikingMLP",
    "SpikingPatchSplit", "TIME_MODES", "TimeFolding", "TokenLinearBN", "sdsa_column_sum",
    "ssa_scores_times_values",
]
__all__ += ["CausalSelfAttention", "DecoderBlock", "LayerKV", "RMSNorm", "SwiGLU"]  # causal (ANN)
