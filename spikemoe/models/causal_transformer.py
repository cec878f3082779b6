"""The dense causal transformer: the twin that the Subjective Depth and Timescale
Transformers are measured against (same width, depth, blocks, inputs and head; every token
runs every layer).

    h_0 = tokens (causal_sequence.py),  h_l = DecoderBlock_l(h_{l-1}),  logits = Head(RMSNorm(h_L))

``causal_transformer_digits`` / ``_lm_small`` / ``test_causal_transformer`` share their sizes
with ``subjective_depth_*`` and ``subjective_timescale_*`` (``causal_sequence.SIZES``).
No router: its metrics are empty and its auxiliary loss is zero.
"""
from __future__ import annotations

import torch
from torch import nn

from ..layers.causal_transformer import DecoderBlock
from .causal_sequence import CausalSequenceModel, StreamState, register_family

__all__ = ["CausalTransformer"]


class CausalTransformer(CausalSequenceModel):
    """Dense decoder-only transformer; ``depth`` pre-norm ``DecoderBlock``s (see the base
    class for the other arguments)."""

    def __init__(self, *, depth: int, **base) -> None:
        super().__init__(**base)
        self.depth = int(depth)
        self.layers = nn.ModuleList(
            DecoderBlock(self.dim, self.num_heads, self.mlp_hidden, self.rope_base)
            for _ in range(self.depth))
        self.init_weights()

    def forward_tokens(self, h, positions, select=None):
        for block in self.layers:
            h = block(h, positions)
        return h, {}

    def step_tokens(self, h: torch.Tensor, positions: torch.Tensor, state: StreamState,
                    select=None) -> torch.Tensor:
        for block, kv in zip(self.layers, state.kv):
            h = block(h, positions, cache=kv)
        return h


register_family("causal_transformer", CausalTransformer, {}, {
    "causal_transformer_digits":
        "Dense causal twin on digits-dvs: [T=4, 2, 32, 32] frames -> 4 tokens, width 64, 4 layers.",
    "causal_transformer_lm_small":
        "Dense byte-level causal LM: vocab 256, 128-byte context, width 128, 4 layers.",
    "test_causal_transformer":
        "Tiny dense causal twin for tests: [T=2, 2, 16, 16] frames, width 32, 2 layers.",
})
