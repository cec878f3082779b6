"""PNG plots of a profile (``ProfileResult``), drawn with matplotlib.

    firing_rates.png    heatmap: spiking neuron layer (rows) x time step (columns), rate
    router_rates.png    per SEMM router: average spiking rate per expert (bars, one panel a
                        router; channel-wise EMSP gates with many experts as a line)
    energy_layers.png   energy per layer under each convention (horizontal bars, uJ)

Each plot is its own ``matplotlib.figure.Figure``, rendered by the Agg canvas that
``savefig`` picks for PNG: pyplot is not used, so the process's backend and pyplot's list of
open figures (a notebook's) are left as they were.
"""
from __future__ import annotations

from pathlib import Path

from ..files import atomic_write
from .energy import CONVENTIONS
from .results import ProfileResult

__all__ = ["plot_profile"]


def _figure(figsize: tuple[float, float]):
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def _save(fig, path: Path) -> Path:
    """PNG to a temporary name, then renamed: an interrupted plot never leaves a half file."""
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, dpi=110, format="png"))
    return path


def plot_firing_heatmap(profile: ProfileResult, path: Path) -> Path:
    layers = profile.firing.layers
    names = list(layers)
    steps = max((len(v["rate_per_step"]) for v in layers.values()), default=1)
    grid = [v["rate_per_step"] + [float("nan")] * (steps - len(v["rate_per_step"]))
            for v in layers.values()] or [[float("nan")]]
    fig = _figure((2.5 + 0.5 * steps, 1.2 + 0.28 * max(len(names), 1)))
    ax = fig.subplots()
    im = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0.0)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xticks(range(steps), [str(t) for t in range(steps)])
    ax.set_xlabel("time step t")
    ax.set_title(f"firing rate per layer and time step (mean {profile.firing.mean_rate:.3f})",
                 fontsize=9)
    fig.colorbar(im, ax=ax, label="spikes per neuron per step")
    if not names:
        ax.text(0, 0, "no spiking neurons", ha="center")
    return _save(fig, path)


def plot_router_rates(profile: ProfileResult, path: Path) -> Path:
    routers = profile.routers
    n = max(len(routers), 1)
    fig = _figure((7, 1.8 * n + 0.6))
    axes = fig.subplots(n, 1, squeeze=False)
    for ax, (name, r) in zip(axes[:, 0], routers.items()):
        rates = r["expert_rate"]
        x = range(len(rates))
        if len(rates) <= 16:
            ax.bar(x, rates, color="tab:blue")
            ax.set_xticks(list(x))
        else:
            ax.plot(list(x), rates, color="tab:blue", lw=1)
        ax.set_ylabel("rate")
        ax.set_title(f"{name}: {len(rates)} experts, routed to none "
                     f"{100 * r['routed_to_none']:.1f}%", fontsize=8)
        ax.set_ylim(0, max(max(rates, default=0) * 1.15, 0.05))
    if not routers:
        axes[0, 0].text(0.5, 0.5, "no SEMM router in this model", ha="center", va="center")
        axes[0, 0].set_axis_off()
    else:
        axes[-1, 0].set_xlabel("expert")
    fig.suptitle("router average spiking rate per expert", fontsize=10)
    return _save(fig, path)


def plot_energy_layers(profile: ProfileResult, path: Path) -> Path:
    energy = profile.energy
    conventions = list(CONVENTIONS)  # aliases ("paper") left out: the same bars twice
    names = [f"{e.layer} ({e.kind})" for e in energy[conventions[0]].layers if e.kind != "mask"]
    fig = _figure((7.5, 1.2 + 0.28 * max(len(names), 1)))
    ax = fig.subplots()
    height = 0.8 / len(conventions)
    for i, c in enumerate(conventions):
        values = [e.energy_pj * 1e-6 for e in energy[c].layers if e.kind != "mask"]
        ys = [y + i * height for y in range(len(values))]
        ax.barh(ys, values, height=height,
                label=f"{c}: {energy[c].per_inference.mean:.4g} mJ per inference")
    ax.set_yticks([y + height * (len(conventions) - 1) / 2 for y in range(len(names))], names,
                  fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"energy per inference (uJ), {profile.cost_table.name}")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("energy per layer", fontsize=10)
    return _save(fig, path)


def plot_profile(profile: ProfileResult, out_dir: str | Path) -> list[Path]:
    """Write the three PNGs into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [plot_firing_heatmap(profile, out / "firing_rates.png"),
            plot_router_rates(profile, out / "router_rates.png"),
            plot_energy_layers(profile, out / "energy_layers.png")]
