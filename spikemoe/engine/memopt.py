"""``run.memopt=LEVEL``: SpikingJelly 2.0's memory optimiser applied to spikemoe's spiking models.

SpikingJelly's ``memopt.optimize_memory`` (Towards Lossless Memory-efficient Training of
Spiking Neural Networks via Gradient Checkpointing and Spike Compression, ICLR 2026) rewrites
a model in place, in four progressive levels:

    0  off: the model is returned untouched (the default, ``run.memopt=null`` or 0).
    1  selective checkpointing: every target module (here the stem and each transformer
       block) runs under a non-reentrant gradient checkpoint that keeps only its input
       (binary inputs bit-packed) and recomputes the rest in the backward. One probing
       forward on an example batch; runs on CPU and GPU.
    2  + spatial splitting: checkpoints split further into their parts (attention / MLP,
       then their projections and neurons) where CUDA's measured peak goes down.
    3  + temporal splitting: neuron, convolution and pooling leaves checkpointed in chunks
       along the time axis.
    4  + greedy unwrapping: checkpoints removed again, costliest first, while the peak
       does not rise.

Levels 2-4 measure ``torch.cuda.max_memory_allocated`` for every candidate, so they need
the model on a GPU; on CPU they are refused with a message saying so. Gradients are the
same up to float rounding (the recomputed forward is the same forward; BatchNorm running
statistics are committed once). spikemoe's own savings (``layers.saved``: spikes saved as
bytes, compact LIF) stay on and compose with it.

Only the spiking vision transformers (``SpikingVisionTransformer``: spikformer*,
spike_driven* and their SEMM twins) declare their blocks; other models are refused.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["MEMOPT_LEVELS", "MemoptError", "apply_memopt", "example_batch", "memopt_split"]

MEMOPT_LEVELS = (0, 1, 2, 3, 4)


class MemoptError(ValueError):
    """``run.memopt`` cannot be applied to this model or device; the message says why."""


def _spiking_parts():
    from spikemoe.layers.attention import HeadwiseSpikingAttention
    from spikemoe.layers.block import SpikingBlock
    from spikemoe.layers.mlp import SpikingMLP
    from spikemoe.layers.patch_split import SpikingPatchSplit
    from spikemoe.models.spiking_vit import SpikingVisionTransformer
    from spikemoe.moe.emsp import EMSP

    return SpikingVisionTransformer, SpikingBlock, SpikingPatchSplit, HeadwiseSpikingAttention, \
        SpikingMLP, EMSP


def memopt_split(module: nn.Module) -> tuple[nn.Module, ...]:
    """Level 2's ``split_fn``: the parts of a checkpointed module, in call order (or ``()``)."""
    from spikingjelly.activation_based.layer import SeqToANNContainer

    _, block, stem, attention, mlp, emsp = _spiking_parts()
    if isinstance(module, block):
        names = ("attn", "mlp")
    elif isinstance(module, attention):  # also EMSA
        names = ("in_lif", "qkv", "qkv_lif", "router", "attn_lif", "proj", "proj_lif")
    elif isinstance(module, emsp):
        names = ("in_lif", "fc1", "fc1_lif", "gate", "gate_lif", "fc2", "fc2_lif")
    elif isinstance(module, mlp):
        names = ("in_lif", "fc1", "fc1_lif", "fc2", "fc2_lif")
    elif isinstance(module, stem):
        return (*module.stages, *module.lifs, module.rpe, module.rpe_lif)
    elif isinstance(module, SeqToANNContainer):
        return tuple(module.children())
    else:
        return ()
    return tuple(getattr(module, n) for n in names if getattr(module, n, None) is not None)


def _can_chunk(module: nn.Module) -> bool:
    """Level 3: leaves whose work is independent along dim 0 (time, or time x batch).
    Never BatchNorm (its statistics span the whole batch) or a Linear+BN pair."""
    from spikingjelly.activation_based import neuron

    return isinstance(module, (neuron.BaseNode, nn.Conv2d, nn.MaxPool2d))


def example_batch(dataset, batch_size: int, device: torch.device | str) -> torch.Tensor:
    """A real input batch for memopt's probing forward: the first ``batch_size`` items of
    ``dataset`` (fewer if it is smaller), collated as the loaders do, on ``device``. Every
    random number generator is left as it was (augmentations draw when items are read), so
    a run draws the same augmentations with and without memopt."""
    from spikemoe.data import collate_time_major

    from .rng import get_rng_state, set_rng_state

    state = get_rng_state()
    try:
        n = max(1, min(int(batch_size), len(dataset)))
        x, _ = collate_time_major([dataset[i] for i in range(n)])
    finally:
        set_rng_state(state)
    return x.to(device)


def apply_memopt(model: nn.Module, level: int | None, example: torch.Tensor, *,
                 checkpoint_budget: str = "memory") -> nn.Module:
    """Apply SpikingJelly's ``optimize_memory`` at ``level`` to ``model`` in place.

    Args:
        model: a ``SpikingVisionTransformer`` on its training device (before DDP wraps it).
        level: 0-4 or None (None and 0 leave the model untouched).
        example: one input batch as the model takes it (``example_batch``); levels 2-4 size
            their search by it, so pass the real per-process batch size.
        checkpoint_budget: SpikingJelly's share of target modules checkpointed at level 1:
            "memory" (all), "balanced" (75%), "speed" (50%, the largest inputs first).

    Returns:
        ``model`` (the same object); its parameters, their names in ``state_dict`` and its
        outputs are unchanged.

    Raises:
        MemoptError: a level outside 0-4, a model without spiking blocks, or levels 2-4
            without CUDA.
    """
    if level is None or level == 0:
        return model
    if isinstance(level, bool) or not isinstance(level, int) or level not in MEMOPT_LEVELS:
        raise MemoptError(f"run.memopt must be one of {', '.join(map(str, MEMOPT_LEVELS))} or null "
                          f"(off), got {level!r}.")
    vit, block, stem, *_ = _spiking_parts()
    if not isinstance(model, vit):
        raise MemoptError(
            f"run.memopt={level}: SpikingJelly's memopt is wired for the spiking vision "
            f"transformers (spikformer*, spike_driven* and their SEMM twins), whose stem and "
            f"blocks it checkpoints; this model is a {type(model).__name__}. Set run.memopt=null.")
    device = next(model.parameters()).device
    if level >= 2 and device.type != "cuda":
        raise MemoptError(
            f"run.memopt={level}: SpikingJelly's memopt levels 2-4 choose where to split by "
            f"measuring CUDA peak memory (torch.cuda.max_memory_allocated) for each candidate, "
            f"so they need the model on a GPU, and this run's model is on {device}. Use "
            "run.memopt=1 (selective checkpointing, runs on CPU too) or run on a GPU.")
    from spikingjelly.activation_based.memopt import optimize_memory

    was_training = model.training
    model.train()  # probe the graph that training builds
    try:
        optimize_memory(model, (stem, block), lambda m: m(example), level=level,
                        checkpoint_budget=checkpoint_budget, compress=True,
                        split_fn=memopt_split if level >= 2 else None,
                        can_chunk=_can_chunk if level >= 3 else None)
    finally:
        model.train(was_training)
    return model
