"""Decoder-only (causal) transformer parts: RMSNorm, SwiGLU, rotary positions, causal
self-attention with an optional KV cache, and the pre-norm decoder block.

    Block(x) = h + SwiGLU(RMSNorm(h)),   h = x + Attn(RMSNorm(x))          (pre-norm)
    SwiGLU(x) = W2 (silu(W1 x) * W3 x)                                    (Shazeer 2020)
    RoPE: (u_i, u_{i + d_h/2}) rotated by p * base^(-2i/d_h) at position p    (Su et al. 2021)
    Attn(x) = W_o softmax(Q K^T / sqrt(d_h) + M) V,
              M_qk = 0 if pos_k <= pos_q and key k is valid, else -inf

Every token carries its own position (``positions [B, n]`` int64), so a block can run on a
time-ordered SUBSET of a sequence's tokens (the routed layers of
``models/subjective_depth.py`` / ``subjective_timescale.py``): the subset attends among
itself with the causal mask of its original positions and its original rotary phases.

Attention is two explicit matmuls (``Q K^T`` and ``A V``), not
``F.scaled_dot_product_attention``: ``spikemoe.analysis.count_operations`` then records
them as the two ``kind == "matmul"`` records ``<module>#1`` and ``<module>#2`` of the
attention module, so counted attention FLOPs follow the tokens that actually ran.

RMSNorm is ``torch.nn.RMSNorm``; SwiGLU, RoPE and the cache are written here (a few lines
each; torch has no module for them).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CausalSelfAttention", "DecoderBlock", "LayerKV", "RMSNorm", "SwiGLU",
           "apply_rotary"]

RMSNorm = nn.RMSNorm


class SwiGLU(nn.Module):
    """``W2 (silu(W1 x) * W3 x)``: ``[..., dim] -> [..., dim]`` through width ``hidden``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


def apply_rotary(u: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotate ``u [B, H, n, d_h]`` by the angles of ``positions [B, n]`` (RoPE, half split).

    ``(u_i, u_{i+d_h/2}) -> (u_i cos a - u_{i+d_h/2} sin a, u_i sin a + u_{i+d_h/2} cos a)``
    with ``a = p * base^(-2i/d_h)``; attention scores then depend on ``p_q - p_k`` only.
    """
    half = u.shape[-1] // 2
    inv_freq = base ** (-torch.arange(half, device=u.device, dtype=torch.float32) / half)
    angles = positions.to(torch.float32)[..., None] * inv_freq  # [B, n] -> [B, n, d_h/2]
    cos = angles.cos()[:, None].to(u.dtype)  # [B, n, d_h/2] -> [B, 1, n, d_h/2]
    sin = angles.sin()[:, None].to(u.dtype)
    u1, u2 = u[..., :half], u[..., half:]
    return torch.cat([u1 * cos - u2 * sin, u1 * sin + u2 * cos], dim=-1)  # 2 x [.., d_h/2] -> [.., d_h]


@dataclass
class LayerKV:
    """The key/value cache of one attention layer, for streaming inference.

    Attributes:
        k, v: ``[B, H, L, d_h]`` rotated keys and values of the L entries written so far.
        positions: ``[B, L]`` their token positions.  valid: ``[B, L]`` whether sequence b
            wrote entry l (a routed layer runs a step for the batch when any sequence selected
            the token; the others append an invalid entry that no query ever reads).
    """

    k: torch.Tensor | None = None
    v: torch.Tensor | None = None
    positions: torch.Tensor | None = None
    valid: torch.Tensor | None = None

    def append(self, k, v, positions, valid):
        """Add ``n`` entries (``k, v [B, H, n, d_h]``); returns the whole cache after it."""
        if self.k is None:
            self.k, self.v, self.positions, self.valid = k, v, positions, valid
        else:
            self.k = torch.cat([self.k, k], dim=2)  # [B, H, L, d_h] + [B, H, n, d_h]
            self.v = torch.cat([self.v, v], dim=2)
            self.positions = torch.cat([self.positions, positions], dim=1)  # [B, L + n]
            self.valid = torch.cat([self.valid, valid], dim=1)
        return self.k, self.v, self.positions, self.valid

    def entries(self) -> torch.Tensor:
        """Entries written, per sequence: ``[B]`` int64 (zeros before the first write).

        These are the valid entries, what a per-sequence cache holds. A batched cache is a
        rectangle: when sequences of one batch select different tokens, a step appends a
        slot (marked invalid) for every sequence, so its allocated length is that of the
        busiest sequence (``allocated()``). At batch 1 the two are equal; the KV savings
        quoted for SDT / STT are per sequence."""
        if self.valid is None:
            return torch.zeros(0, dtype=torch.int64)
        return self.valid.sum(dim=1)

    def allocated(self) -> int:
        """Slots allocated per sequence (the cache's length ``L``, valid or not)."""
        return 0 if self.valid is None else int(self.valid.shape[1])


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with rotary positions and an optional KV cache.

    ``forward(x [B, n, D], positions [B, n], key_valid [B, n] | None, cache, write)``
    -> ``[B, n, D]``. ``key_valid`` marks padding in a gathered subset (False = never a key
    for another query; each query may always read its own key, so no row is empty).
    With ``cache`` the new keys/values are appended first (``write [B]`` bool per sequence,
    default all) and the queries read every valid cached entry at or before their position.
    """

    def __init__(self, dim: int, num_heads: int, rope_base: float = 10000.0) -> None:
        super().__init__()
        if dim % num_heads or (dim // num_heads) % 2:
            raise ValueError(f"dim={dim} must split into {num_heads} heads of even width "
                             f"(rotary positions rotate pairs); pick num_heads dividing dim "
                             "with an even quotient")
        self.num_heads, self.head_dim, self.rope_base = num_heads, dim // num_heads, rope_base
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, positions: torch.Tensor,
                key_valid: torch.Tensor | None = None, cache: LayerKV | None = None,
                write: torch.Tensor | None = None) -> torch.Tensor:
        B, n, D = x.shape
        H, dh = self.num_heads, self.head_dim
        # [B, n, 3D] -> [B, n, 3, H, d_h] -> [3, B, H, n, d_h]
        q, k, v = self.qkv(x).view(B, n, 3, H, dh).permute(2, 0, 3, 1, 4)
        q = apply_rotary(q, positions, self.rope_base)
        k = apply_rotary(k, positions, self.rope_base)
        valid = key_valid if key_valid is not None else torch.ones(B, n, dtype=torch.bool,
                                                                   device=x.device)
        kpos = positions
        if cache is not None:
            if write is not None:
                valid = valid & write[:, None]  # [B] -> [B, 1] -> [B, n]
            k, v, kpos, valid = cache.append(k, v, positions, valid)
        L = k.shape[2]
        scores = (q @ k.transpose(-2, -1)) * dh ** -0.5  # [B, H, n, d_h] @ [B, H, d_h, L]
        allowed = (kpos[:, None, :] <= positions[:, :, None]) & valid[:, None, :]  # [B, n, L]
        own = torch.zeros(n, L, dtype=torch.bool, device=x.device)
        own[:, L - n:] = torch.eye(n, dtype=torch.bool, device=x.device)  # query i <-> its key
        allowed = allowed | own
        scores = scores.masked_fill(~allowed[:, None], float("-inf"))  # [B, 1, n, L] over H
        out = scores.softmax(dim=-1) @ v  # [B, H, n, L] @ [B, H, L, d_h] -> [B, H, n, d_h]
        return self.proj(out.transpose(1, 2).reshape(B, n, D))  # -> [B, n, H, d_h] -> [B, n, D]


class DecoderBlock(nn.Module):
    """Pre-norm decoder block: ``h = x + Attn(RMSNorm(x))``, ``out = h + SwiGLU(RMSNorm(h))``.

    Same arguments as ``CausalSelfAttention.forward``; ``[B, n, D] -> [B, n, D]``.
    """

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int,
                 rope_base: float = 10000.0) -> None:
        super().__init__()
        self.norm1 = RMSNorm(dim, eps=1e-6)
        self.attn = CausalSelfAttention(dim, num_heads, rope_base)
        self.norm2 = RMSNorm(dim, eps=1e-6)
        self.mlp = SwiGLU(dim, mlp_hidden)

    def forward(self, x: torch.Tensor, positions: torch.Tensor,
                key_valid: torch.Tensor | None = None, cache: LayerKV | None = None,
                write: torch.Tensor | None = None) -> torch.Tensor:
        h = x + self.attn(self.norm1(x), positions, key_valid, cache, write)
        return h + self.mlp(self.norm2(h))
