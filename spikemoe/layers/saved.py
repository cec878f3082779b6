"""Keep less for the backward pass: spikes and spike counts saved as bytes, max-pool indices
as window offsets. Gradients stay exactly the same.

Spiking transformers keep T copies of every activation for the backward; most of what a
Linear, a Conv or a matmul saves is its spike input, a float tensor that holds only 0 and 1
(or, on Spikformer's residual stream and in attention counts, small integers). Two tools:

``compact_saved(*exclude)``
    A ``torch.autograd.graph.saved_tensors_hooks`` context: every floating tensor autograd
    saves inside it whose values are integers in [0, 255] is stored as ``uint8`` (1 byte an
    element instead of 4) and restored, with its original dtype, shape and strides, when the
    backward unpacks it. The check is on the values (one comparison pass), so a tensor that is
    not spikes is kept as it was; ``exclude`` names tensors (weights) not worth checking. The
    backward nodes are autograd's own (AddmmBackward0, BmmBackward0, ...) and see the same
    values and layout, so every gradient is bit for bit the one autograd computes without it.
    Hooks already active outside (a non-reentrant checkpoint, SpikingJelly's memopt) wrap
    ours: they see the byte tensor. CPU tensors only: on a GPU the value check would make the
    host wait for the device once per saved tensor (GPU tensors pass through unchanged).

``CompactMaxPool2d``
    ``nn.MaxPool2d`` whose backward keeps only the argmax, as its offset from the pooling
    window's corner (``int16``: 2 bytes per output element), instead of the input (4 bytes per
    input element) and int64 indices (8 bytes per output element): 24 bytes per output of a
    stride-2 pool become 2. The backward is torch's own ``max_pool2d_with_indices_backward``
    with the indices rebuilt exactly (it reads the input only for its shape).

``full_saving()`` turns both off (and spikemoe's compact LIF, ``neurons.SpikingLIF``): the
reference against which tests check that values and gradients are unchanged.

Why not SpikingJelly's ``memopt.Uint8SpikeCompressor``: it compresses the input of a
checkpointed module and recomputes the module in the backward; here nothing is recomputed.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from ..neurons import full_saving, saving_enabled  # the switch lives with the neurons

__all__ = ["CompactMaxPool2d", "compact_saved", "full_saving", "saving_enabled"]

_FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


class _Packed:
    """A saved tensor stored as bytes, with what rebuilds it exactly."""

    __slots__ = ("data", "dtype", "size", "stride")

    def __init__(self, data: torch.Tensor, like: torch.Tensor) -> None:
        self.data, self.dtype, self.size, self.stride = data, like.dtype, like.size(), like.stride()

    def unpack(self) -> torch.Tensor:
        out = torch.empty_strided(self.size, self.stride, dtype=self.dtype, device=self.data.device)
        return out.copy_(self.data)  # same values, same strides as the tensor that was saved


def _as_bytes(t: torch.Tensor) -> torch.Tensor | None:
    """``t`` as uint8 if every value is an integer in [0, 255], else None."""
    if (t.device.type != "cpu" or t.dtype not in _FLOATS or t.numel() == 0
            or t.requires_grad and t.is_leaf):
        return None  # on a GPU the value check would stall the stream once per saved tensor
    if t.numel() > 4096:  # a cheap look at some values first: most non-spikes fail here
        head = t.view(-1)[:1024] if t.is_contiguous() else t[(0,) * (t.dim() - 1)][:1024]
        if not torch.equal(head.to(torch.uint8).to(t.dtype), head):
            return None
    u = torch.empty_like(t, dtype=torch.uint8).copy_(t)  # out of range or fractional: caught
    if not torch.equal(torch.empty_like(t).copy_(u), t):
        return None
    return u


@contextlib.contextmanager
def compact_saved(*exclude: torch.Tensor | None):
    """Save spike-valued tensors as uint8 for the backward (see the module docstring).

    Args:
        exclude: tensors (e.g. a layer's weight and bias) that are kept as they are without a
            check; any tensor sharing their storage is skipped.
    """
    if not saving_enabled() or not torch.is_grad_enabled():
        yield
        return
    skip = {t.untyped_storage().data_ptr() for t in exclude if t is not None}
    outer = torch._C._autograd._top_saved_tensors_default_hooks(False)
    outer_pack, outer_unpack = outer if outer is not None else (None, None)

    def pack(t: torch.Tensor):
        u = None if t.untyped_storage().data_ptr() in skip else _as_bytes(t)
        if u is None:
            return (False, outer_pack(t) if outer_pack else t)
        return (True, (outer_pack(u) if outer_pack else u), _Packed(None, t))

    def unpack(packed):
        if not packed[0]:
            return outer_unpack(packed[1]) if outer_unpack else packed[1]
        meta = packed[2]
        meta.data = outer_unpack(packed[1]) if outer_unpack else packed[1]
        out = meta.unpack()
        meta.data = None
        return out

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        yield


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


class _MaxPoolOffsets(torch.autograd.Function):
    """2-D max pool over ``[N, C, H, W]`` saving the argmax as an int16 window offset."""

    @staticmethod
    def forward(ctx, x, kernel, stride, padding, ceil_mode):
        out, idx = torch.ops.aten.max_pool2d_with_indices(x, kernel, stride, padding, [1, 1],
                                                          ceil_mode)
        # idx [N, C, Ho, Wo]: flat position in the H x W plane -> (dh, dw) inside the window
        ctx.geometry = (x.shape, x.dtype, x.stride(), kernel, stride, padding, ceil_mode)
        ctx.save_for_backward(_window_offsets(idx, x.shape[-1], kernel, stride, padding))
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (offsets,) = ctx.saved_tensors
        shape, dtype, stride_x, kernel, stride, padding, ceil_mode = ctx.geometry
        idx = _window_indices(offsets, shape[-1], kernel, stride, padding)
        like = torch.empty_strided(shape, stride_x, dtype=dtype, device=grad.device)  # shape only
        gx = torch.ops.aten.max_pool2d_with_indices_backward(
            grad, like, kernel, stride, padding, [1, 1], ceil_mode, idx)
        return gx, None, None, None, None


def _window_base(out_shape, width, stride, padding, device) -> torch.Tensor:
    """Flat input position of each output window's top-left corner: ``[Ho, Wo]`` int64."""
    ho, wo = out_shape[-2], out_shape[-1]
    rows = torch.arange(ho, device=device).mul_(stride[0]).sub_(padding[0]).unsqueeze(1)
    cols = torch.arange(wo, device=device).mul_(stride[1]).sub_(padding[1])
    return rows.mul_(width) + cols  # [Ho, 1] + [Wo] -> [Ho, Wo]


def _offset_dtype(width: int, kernel) -> torch.dtype:
    # the argmax lies at (dh, dw) in its window: offset dh * W + dw <= (k - 1) (W + 1)
    return torch.int16 if (kernel[0] - 1) * (width + 1) < 2**15 else torch.int32


def _window_offsets(idx, width, kernel, stride, padding):
    base = _window_base(idx.shape, width, stride, padding, idx.device)
    return idx.sub_(base).to(_offset_dtype(width, kernel))  # idx is ours: reused in place


def _window_indices(offsets, width, kernel, stride, padding):
    base = _window_base(offsets.shape, width, stride, padding, offsets.device)
    return offsets.to(torch.int64).add_(base)  # [N, C, Ho, Wo], as max_pool2d returned them


class CompactMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` (dilation 1, no ``return_indices``) that saves 2 bytes per output for
    its backward (see the module docstring); same values, same gradients."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel, stride = _pair(self.kernel_size), _pair(self.stride or self.kernel_size)
        padding = _pair(self.padding)
        if (not saving_enabled() or not torch.is_grad_enabled() or not x.requires_grad
                or x.dim() != 4 or self.return_indices or _pair(self.dilation) != (1, 1)):
            return super().forward(x)
        return _MaxPoolOffsets.apply(x, list(kernel), list(stride), list(padding),
                                     bool(self.ceil_mode))
