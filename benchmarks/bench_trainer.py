"""Trainer overhead: step time of ``Trainer.train_epoch`` against a bare PyTorch loop over the
same model, data, optimiser and loss. Goal (issue 4): <= 1.05x.

    bare     for x, y in loader: out = model(x); loss = CE(out.logits, y) + out.aux_loss;
             zero_grad; backward; AdamW step
    trainer  Trainer.train_epoch: the same, plus what the trainer adds per step (LR schedule,
             NaN/inf bookkeeping, on-device metric sums incl. the model's router metrics,
             tqdm bar, a synchronised log record every run.log_every steps)

Both run the demo model (``configs/demo.yaml``: spikformer_semm_2_256_dvs at width 96, one
block, T = 4, 32 x 32) on synthetic event frames of the demo's shape, batch 32, fp32 on CPU
(or the default precision on a GPU: pass ``--device cuda``). The trainer's tqdm bar is on, as
in a real run (it writes to stderr). Each round times ``--steps`` steps of the bare loop, then
the same number of the trainer's; the first round is a warm-up and is dropped. On a shared
machine the load drifts between rounds but not much within one, so the figure is the median
of the per-round ratios (also printed: each loop's median time per step).

    python benchmarks/bench_trainer.py [--steps 8] [--rounds 15] [--model NAME] 2>/dev/null
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

import spikemoe
from spikemoe.data import collate_time_major
from spikemoe.engine import Trainer, load_config
from spikemoe.engine.loaders import DataBundle
from spikemoe.engine.synthetic import SyntheticFrames


def bare_loop(model, loader, device, lr: float, label_smoothing: float) -> float:
    """Seconds per step of the plainest correct training loop."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    model.train()
    n = 0
    start = time.perf_counter()
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        out = model(x)
        loss = criterion(out.logits, y) + out.aux_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--model", default=None, help="default: the demo's model")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    args = ap.parse_args()

    demo = load_config(None)
    if args.model:
        demo.model.name, demo.model.kwargs = args.model, {}
    T, batch = demo.data.T, demo.data.batch_size
    n = args.steps * batch
    data = SyntheticFrames(n, T=T, size=32, num_classes=10)
    bundle = DataBundle(data, SyntheticFrames(batch, T=T, size=32, num_classes=10, offset=n), 10)
    with tempfile.TemporaryDirectory() as out:
        cfg = load_config(None, [f"run.out_dir={out}", "run.name=bench", f"run.device={args.device}",
                                 "run.tensorboard=false", "schedule.warmup_epochs=0"])
        cfg.model = demo.model
        trainer = Trainer(cfg, data=bundle)
        device = trainer.device
        torch.manual_seed(0)
        bare_model = spikemoe.create_model(cfg.model.name, **cfg.model.kwargs).to(device)
        loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=True, drop_last=True,
                                             collate_fn=collate_time_major)
        bare, ours = [], []
        for r in range(args.rounds + 1):
            b = bare_loop(bare_model, loader, device, cfg.optim.lr, cfg.optim.label_smoothing)
            trainer.step = 0  # replay epoch 0 (the schedule restarts too: same work per step)
            trainer.scheduler.last_epoch = 0
            start = time.perf_counter()
            trainer.train_epoch(0)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = (time.perf_counter() - start) / trainer.steps_per_epoch
            if r > 0:  # round 0 warms up both
                bare.append(b)
                ours.append(t)
            print(f"round {r}{' (warm-up)' if r == 0 else ''}: bare {b * 1e3:.1f} ms/step, "
                  f"trainer {t * 1e3:.1f} ms/step, ratio {t / b:.3f}", flush=True)
        trainer.close()
    params = sum(p.numel() for p in bare_model.parameters())
    ratios = [t / b for t, b in zip(ours, bare)]
    print(f"\n{cfg.model.name} ({params:,} params), batch {batch}, T={T}, {device}, "
          f"{args.steps} steps x {args.rounds} rounds, {torch.get_num_threads()} threads")
    print(f"bare loop   {statistics.median(bare) * 1e3:8.2f} ms/step (median of rounds)")
    print(f"trainer     {statistics.median(ours) * 1e3:8.2f} ms/step (median of rounds)")
    print(f"overhead    {statistics.median(ratios):8.3f}x  median of per-round ratios "
          f"(quartiles {statistics.quantiles(ratios, n=4)[0]:.3f}-"
          f"{statistics.quantiles(ratios, n=4)[2]:.3f}); goal <= 1.05x")


if __name__ == "__main__":
    main()
