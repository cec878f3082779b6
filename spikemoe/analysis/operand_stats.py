"""What ``op_counts.LayerOpCounter`` reads from the values of a counted op's operands, cheaply,
for the whole tensor or per sample of a batch.

Per activation operand x: ``binary`` (every value in {0, 1}), ``integer`` (every value a
non-negative integer: spike counts, binary included) and ``nonzero`` (entries != 0), and for
an integer-valued x the accumulates it triggers (``events``, see ``op_counts``). Written the
obvious way (``(x == 0) | (x == 1)``, ``x == floor(x)``, ``count_nonzero``, which is a slow
kernel on CPU) that is eight to ten reads of x per op: with a batch of 32 it cost half as much
as the forward itself. Here:

    lo, hi  = aminmax(x)                                       one read
    nonzero = #(x != 0)                                        on [0, 1] sum(ceil(x)), in
                                                               float32 while exact; else
                                                               sum(x.bool()) in int32
    binary  <=> lo >= 0, hi <= 1 and #(x == 1) == nonzero      #(x == 1) = sum(floor(x))
    integer <=> binary, or lo >= 0 and x == floor(x)           read only when not binary

(NaN fails lo >= 0, as it failed the comparisons before; +inf stays an "integer", as before.)

Convolution events without a second convolution: ``sum(conv(x, ones)) = sum_p x[p] cover[p]``
where ``cover[p]`` is the number of output windows that read input position p (zero padding
reads nothing). ``cover`` depends on the shapes alone (input size, kernel, stride, padding,
dilation), so it is computed once per shape (``conv_cover``); a convolution's events are then
one reduction of x over batch and channels and a dot product, times C_out / groups.

Per sample (``sample_view``): a batch's operand seen as ``[T', B, M]`` with sample b's
entries in ``[:, b]``, for the time-major layouts of the model contract (``[T*B*k, ...]``,
``[T, B*k, ...]``) and for batch-first tensors without a time axis (``[B*k, ...]``). Every
statistic above is then taken per sample (reduced over T' and M), so that one batched forward
gives each sample's counts as if it had run alone; ``profile_model`` checks that against one
sample really run alone before it relies on it.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

__all__ = ["OperandStats", "bmm_events", "conv_cover", "conv_events", "nonzero",
           "operand_stats", "operation_events", "sample_layout", "sample_view",
           "shared_layout", "sums"]

aten = torch.ops.aten


@dataclass
class OperandStats:
    """Statistics of one operand per group (one group: the whole tensor; B: per sample)."""

    binary: list[bool]
    integer: list[bool]
    nonzero: list[int]
    signed: bool = False  # some entry < 0 (or NaN): not spikes, counts or their means
    peak: float = float("inf")  # the largest entry (inf: not known)

    @property
    def all_binary(self) -> bool:
        return all(self.binary)

    @property
    def all_integer(self) -> bool:
        return all(self.integer)


def sample_layout(t: torch.Tensor, steps: int, batch: int, rows: bool = False
                  ) -> tuple[int, int] | None:
    """How the samples of a forward on ``batch`` samples (``steps`` time steps) lie along the
    leading axes of its operand ``t``: ``(T', B)`` such that ``t.reshape(T', B, -1)[:, b]``
    holds sample b's entries; None when no layout fits.

    ``[T*B*k, ...]``: ``(T, B)`` (time-major rows: a ``[T*B, C, H, W]`` convolution input,
    ``[T*B*N, C]`` tokens); ``[T, B*k, ...]``: ``(T, B)`` (``[T, B, N, C]``); ``[B*k, ...]``:
    ``(1, B)`` (no time axis). ``rows=True`` (a convolution input, whose first axis is its
    images) leaves out the second.
    """
    if batch == 1:
        return 1, 1
    if t.dim() == 0:
        return None
    lead = t.shape[0]
    if lead % (steps * batch) == 0:
        return steps, batch
    if not rows and t.dim() >= 2 and lead == steps and t.shape[1] % batch == 0:
        return steps, batch
    if lead % batch == 0:
        return 1, batch
    return None


def shared_layout(tensors, steps: int, batch: int, rows: bool = False
                  ) -> tuple[int, int] | None:
    """The ``sample_layout`` of the operands of one op, when it is the same for all and they
    have equal sizes along the axes that hold the samples (so that sample b of one meets
    sample b of the other); None otherwise (e.g. a broadcast operand without a batch axis)."""
    found = {sample_layout(t, steps, batch, rows) for t in tensors}
    # the axes that hold the samples: [T, B*k, ...] the first two, else the first
    lead = {tuple(t.shape[:2] if t.dim() >= 2 and t.shape[0] == steps
                  and t.shape[0] % (steps * batch) else t.shape[:1]) for t in tensors}
    return found.pop() if len(found) == 1 and len(lead) == 1 else None


def sample_view(t: torch.Tensor, steps: int, batch: int, rows: bool = False
                ) -> torch.Tensor | None:
    """``t`` as ``[T', B, M]`` with sample b's entries in ``[:, b]`` (``sample_layout``)."""
    layout = sample_layout(t, steps, batch, rows)
    return None if layout is None else t.reshape(*layout, -1)


def _count(flags: torch.Tensor, dims: tuple[int, ...] | None = None):
    """Sum of a bool / uint8 (0 or 1) tensor: in int32 (a quarter of the time of the int64
    default on CPU) while exact, below 2^31 entries; ``dims``: per group."""
    wide = torch.int32 if flags.numel() < 2**31 else torch.int64
    flags = flags.view(torch.uint8) if flags.dtype == torch.bool else flags
    if dims is None:
        return int(flags.sum(dtype=wide))
    return flags.sum(dims, dtype=wide)


def _sum01(t: torch.Tensor, dims: tuple[int, ...] | None = None):
    """Sum of a tensor whose entries (that matter) are 0 or 1, exact: in float32 below 2^24
    entries (a cast to bool or uint8 and an integer sum take twice as long on CPU), else in
    float64; int64 (whole, or per group over ``dims``)."""
    acc = torch.float32 if t.numel() < 2**24 else torch.float64
    return t.sum(() if dims is None else dims, dtype=acc).to(torch.int64)


def _whole(x: torch.Tensor) -> tuple[bool, bool, int, bool, float]:
    """``(binary, integer, nonzero, signed, peak)`` of the whole tensor."""
    if x.numel() == 0:
        return True, True, 0, False, 0.0
    if x.dtype == torch.bool:
        return True, True, _count(x), False, 1.0
    if x.is_complex():  # no order: the plain tests
        binary = bool(x.eq(0).logical_or_(x.eq(1)).all())
        integer = binary or bool((x.real >= 0).all() and (x.imag == 0).all()
                                 and (x.real == x.real.floor()).all())
        return binary, integer, int(x.count_nonzero()), not integer, float("inf")
    lo, hi = (float(v) for v in torch.aminmax(x))
    if lo >= 0 and hi <= 1:  # spikes, or values between: ceil marks nonzeros, floor ones
        nz, ones = int(_sum01(x.ceil())), int(_sum01(x.floor()))
        binary = ones == nz
    else:
        nz, binary = _count(x.bool()), False
    integer = binary or (lo >= 0 and (not x.is_floating_point()
                                      or torch.equal(x, x.floor())))
    return binary, integer, nz, not lo >= 0, hi


def operand_stats(x: torch.Tensor, view: torch.Tensor | None = None) -> OperandStats:
    """``binary``, ``integer``, ``nonzero`` of ``x`` (module docstring): of the whole tensor
    (``view`` None), or per sample of ``view = sample_view(x, ...)`` ``[T', B, M]``."""
    if view is None:
        binary, integer, nz, signed, peak = _whole(x)
        return OperandStats([binary], [integer], [nz], signed, peak)
    groups = view.shape[1]
    if view.numel() == 0:
        return OperandStats([True] * groups, [True] * groups, [0] * groups, False, 0.0)
    if view.dtype == torch.bool:
        nz = _count(view, (0, 2)).tolist()
        return OperandStats([True] * groups, [True] * groups, nz, False, 1.0)
    if view.is_complex():
        per = [_whole(view[:, g]) for g in range(groups)]
        return OperandStats([p[0] for p in per], [p[1] for p in per], [p[2] for p in per],
                            any(p[3] for p in per), float("inf"))
    lo, hi = view.amin((0, 2)), view.amax((0, 2))  # [B]
    nonneg = lo >= 0
    binary = nonneg & (hi <= 1)
    # on [0, 1] ceil marks the nonzero entries, floor the ones (beyond, floor's sum is
    # meaningless, and not read: those samples are not binary)
    nz = (_sum01(view.ceil(), (0, 2)) if bool(binary.all())
          else _count(view.bool(), (0, 2)))  # [B]
    if bool(binary.any()):
        binary &= _sum01(view.floor(), (0, 2)) == nz
    integer = binary.clone()
    rest = nonneg & ~binary
    if bool(rest.any()):
        whole = (view == view.floor()).all(2).all(0) if view.is_floating_point() else rest
        integer |= rest & whole
    return OperandStats(binary.tolist(), integer.tolist(), nz.tolist(),
                        not bool(nonneg.all()), float(hi.max()))


def nonzero(x: torch.Tensor, view: torch.Tensor | None = None) -> list[int]:
    """Entries != 0: of the whole tensor (one group) or per sample of ``view``."""
    if view is None:
        return [_count(x.bool())]
    return _count(view.bool(), (0, 2)).tolist()


def sums(x: torch.Tensor, view: torch.Tensor | None = None) -> list[float]:
    """Sum of the values in float64 (exact for spike counts): whole or per sample."""
    if view is None:
        return [float(x.sum(dtype=torch.float64))]
    return view.sum((0, 2), dtype=torch.float64).tolist()


@lru_cache(maxsize=1024)
def _cover_1d(size: int, out: int, kernel: int, stride: int, padding: int,
              dilation: int) -> tuple[int, ...]:
    """Along one axis: how many (output position, kernel tap) pairs read input position i."""
    cover = [0] * size
    for o in range(out):
        for k in range(kernel):
            i = o * stride - padding + k * dilation
            if 0 <= i < size:
                cover[i] += 1
    return tuple(cover)


@lru_cache(maxsize=256)
def conv_cover(spatial: tuple[int, ...], out: tuple[int, ...], kernel: tuple[int, ...],
               stride: tuple[int, ...], padding: tuple[int, ...], dilation: tuple[int, ...],
               device: str = "cpu") -> torch.Tensor:
    """``cover [*spatial]`` (float64): how many output windows of a convolution read each
    input position; the product of the per-axis counts (the window is a box).

    Example: size 4, kernel 3, stride 1, padding 1 (4 outputs) -> [2, 3, 3, 2]."""
    cover = torch.ones((), dtype=torch.float64)
    for args in zip(spatial, out, kernel, stride, padding, dilation, strict=True):
        axis = torch.tensor(_cover_1d(*args), dtype=torch.float64)
        cover = cover.unsqueeze(-1) * axis  # [*S_before] -> [*S_before, S_axis]
    return cover.to(device)


def conv_events(a: torch.Tensor, weight: torch.Tensor, out: torch.Tensor, args: tuple,
                layout: tuple[int, int] | None = None, peak: float = float("inf")
                ) -> list[int]:
    """Accumulates that integer-valued input ``a [N, C_in, *S]`` triggers in a (not
    transposed) convolution: ``sum_p x[p] cover[p] * C_out / groups`` with x summed over
    the images and the channels (module docstring); of the whole batch (one group), or per
    sample for ``layout = sample_layout(a, ..., rows=True)``. The sum over images and
    channels is taken in float32, three times faster, where it is exact: every partial sum
    an integer below 2^24 (``peak``, the largest entry, times N C_in)."""
    spatial = tuple(a.shape[2:])
    n = len(spatial)

    def per_axis(v) -> tuple[int, ...]:
        return tuple(v) * n if len(v) == 1 else tuple(v)

    cover = conv_cover(spatial, tuple(out.shape[2:]), tuple(weight.shape[2:]),
                       per_axis(args[3]), per_axis(args[4]), per_axis(args[5]), str(a.device))
    fan_out = weight.shape[0] // args[8]  # C_out / groups
    exact32 = a.is_floating_point() and peak * a.shape[0] * a.shape[1] < 2**24
    dtype = torch.float32 if exact32 else torch.float64
    if layout is None:
        x = a.sum((0, 1), dtype=dtype).double()  # [N, C, *S] -> [*S]
        return [int(round(float((x * cover).sum()) * fan_out))]
    # [T'*B*k, C, *S] -> [T'*B, k*C, P] -> [T', B, P] -> [B, P] (two reductions over
    # adjacent axes: one over the non-adjacent T' and k*C is ten times slower)
    steps, groups = layout
    x = a.reshape(steps * groups, -1, cover.numel()).sum(1, dtype=dtype)
    x = x.reshape(steps, groups, -1).sum(0).double()
    per = (x * cover.reshape(-1)).sum(1)  # [B]
    return [int(round(v * fan_out)) for v in per.tolist()]


def bmm_events(a: torch.Tensor, b: torch.Tensor, layout: tuple[int, int] | None = None
               ) -> list[int]:
    """Accumulates of a product of two integer-valued activations ``a [(G,) m, k] @ b [(G,)
    k, n]``: ``sum_k colsum(a)_k rowsum(b)_k``; of the whole batch, or per sample for the
    ``layout`` of G (``sample_layout``; a batched product only)."""
    col = a.sum(-2, dtype=torch.float64)  # [(G,) k]
    row = b.sum(-1, dtype=torch.float64)  # [(G,) k]
    if layout is None:
        return [int(round(float((col * row).sum())))]
    per = (col * row).sum(-1).reshape(*layout, -1).sum((0, 2))  # [G] -> [T', B, -1] -> [B]
    return [int(round(v)) for v in per.tolist()]


_PYTHON_KEY = torch._C.DispatchKeySet(torch._C.DispatchKey.Python)


def _untracked():
    """Run aten ops without re-entering the counting mode (as SpikingJelly's rules do)."""
    return torch._C._ExcludeDispatchKeyGuard(_PYTHON_KEY)


def operation_events(func, a: torch.Tensor, b: torch.Tensor, a_weight: bool, b_weight: bool,
                     out: torch.Tensor, args: tuple, stats: list[OperandStats],
                     binary: list[bool], layout: tuple[int, int] | None) -> list[int]:
    """Accumulates that the integer-valued activations of a matmul / convolution trigger,
    per group (whole, or per sample for ``layout``), given their ``stats`` and whether each
    group is ``binary``: ``sum(X @ W) = sum(X) * n`` for ``[m, k] @ [k, n]`` (``nnz(X) * n``
    for spikes: no extra read); ``sum_k colsum(A)_k rowsum(B)_k`` for two activations
    (``bmm_events``); ``conv_events`` for a convolution, or (transposed, a weight as its
    input: whole only) the convolution run again in float64 with ones for the weights."""
    with torch.no_grad(), _untracked():
        if func is aten.convolution.default:
            if b_weight and not a_weight and not args[6]:
                return conv_events(a, b, out, args, layout, stats[0].peak)
            a = torch.ones_like(a, dtype=torch.float64) if a_weight else a.double()
            b = torch.ones_like(b, dtype=torch.float64) if b_weight else b.double()
            return [int(round(float(aten.convolution.default(a, b, None, *args[3:9]).sum())))]
        if a_weight or b_weight:  # a Linear: activations times a weight
            fan_out = b.shape[-1] if b_weight else a.shape[-2]
            if all(binary):
                return [nz * fan_out for nz in stats[0].nonzero]
            x = a if b_weight else b
            total = sums(x, None if layout is None else x.reshape(*layout, -1))
            return [nz * fan_out if bin_ else int(round(s * fan_out))
                    for nz, s, bin_ in zip(stats[0].nonzero, total, binary)]
        return bmm_events(a, b, layout)
