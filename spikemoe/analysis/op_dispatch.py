"""How the aten ops of a forward reach an operation counter (``op_counts.LayerOpCounter``),
with the names of the modules running them; written by hand for speed.

SpikingJelly's ``DispatchCounterMode`` does the same job: it tracks modules with torch's
``ModuleTracker``, which flattens every module's inputs and outputs (pytree) on the way in
and out, and calls each of its counters for every aten op, counted or not. In a profile that
costs twice the dispatch itself (``benchmarks/bench_profile.py``). ``CountingMode`` hands the
counter only the ops it counts; ``ModuleScopes`` keeps the names ``ModuleTracker`` gives
(``{"Global", "<Root>", "<Root>.blocks.0", ...}``: the class name of the first module seen,
``<parent>.<attribute>`` below it) with two global forward hooks and a dict.

``run_counted`` runs a forward under both; modules of the ``paused`` types (the spiking
neurons: their state updates are not synaptic operations, and in a spiking transformer they
are most of the aten calls) run with the mode switched off, and so do leaf modules of the
``quiet`` types (normalisation, pooling: no op of theirs is counted, and their kernels run
slower under a Python mode, about 1 ms of a 30 ms forward of the demo model).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.utils._python_dispatch import (
           TorchDispatchMode,
           _get_current_dispatch_mode,
           _pop_mode_temporarily,
)

__all__ = ["CountingMode", "ModuleScopes", "run_counted"]


class ModuleScopes:
    """The names of the modules running now (``parents``), as ``ModuleTracker`` has them."""

    def __init__(self, root: nn.Module) -> None:
        self.parents = {"Global"}
        self._names: dict[nn.Module, str] = {}
        self._seen: set[nn.Module] = set()
        self._handles: list = []
        self.name(root)  # what ModuleTracker does when the root's forward starts

    def name(self, mod: nn.Module) -> str:
        """``ModuleTracker._get_mod_name``: a module first seen is named by its class, its
        children (recursively) ``<parent>.<attribute>``."""
        if mod not in self._names:
            self._names[mod] = type(mod).__name__
        name = self._names[mod]
        if mod not in self._seen:
            for child_name, child in mod.named_children():
                self._names[child] = f"{name}.{child_name}"
                self.name(child)
            self._seen.add(mod)
        return name

    def _enter(self, mod: nn.Module, args) -> None:
        self.parents.add(self._names[mod] if mod in self._seen else self.name(mod))

    def _leave(self, mod: nn.Module, args, out) -> None:
        self.parents.discard(self._names[mod] if mod in self._seen else self.name(mod))

    def __enter__(self) -> ModuleScopes:
        self._handles = [register_module_forward_pre_hook(self._enter),
                         register_module_forward_hook(self._leave)]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


class CountingMode(TorchDispatchMode):
    """Runs every aten op; hands those in ``ops`` to ``counter.count(func, args, kwargs, out,
    parent_names=...)`` (the ``BaseCounter.count`` signature)."""

    def __init__(self, counter, ops: frozenset, scopes: ModuleScopes) -> None:
        super().__init__()
        self.counter, self.ops, self.scopes = counter, ops, scopes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in self.ops:
            self.counter.count(func, args, kwargs, out, parent_names=self.scopes.parents)
        return out


@torch.no_grad()
def run_counted(model: nn.Module, x, counter, ops: frozenset, paused: type | tuple[type, ...],
                on_pause: Callable[[], None], quiet: tuple[type, ...] = ()) -> object:
    """``model(x)`` under a ``CountingMode``; modules of the ``paused`` types run without it
    (``on_pause()`` as each starts), and so do leaf modules (no children) of the ``quiet``
    types. Returns the model's output."""
    stack: list = []
    mode: list[CountingMode] = []

    def enter(module, args):
        if isinstance(module, paused):
            on_pause()
        # off unless already off (a quiet module inside a neuron, a neuron inside a neuron)
        on = mode and _get_current_dispatch_mode() is mode[0]
        ctx = _pop_mode_temporarily() if on else contextlib.nullcontext()
        ctx.__enter__()
        stack.append(ctx)

    def leave(module, args, out):
        stack.pop().__exit__(None, None, None)

    handles = []
    for m in model.modules():
        if isinstance(m, paused) or (isinstance(m, quiet) and next(m.children(), None) is None):
            handles.append(m.register_forward_pre_hook(enter))
            handles.append(m.register_forward_hook(leave))
    try:
        with ModuleScopes(model) as scopes, CountingMode(counter, ops, scopes) as counting:
            mode.append(counting)
            try:
                return model(x)
            finally:
                while stack:  # a paused module raised: restore the mode before leaving it
                    stack.pop().__exit__(None, None, None)
    finally:
        for h in handles:
            h.remove()
