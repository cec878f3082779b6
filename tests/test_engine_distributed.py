"""torchrun: 2 gloo processes on CPU train like 1 process on the same global batch.

``data.batch_size`` is the global batch, so the same config gives each of 2 ranks half of
every batch (positions 0, 2, 4... and 1, 3, 5... of the same permutation). With a model
without BatchNorm (``TinyANN``; BatchNorm statistics are per rank unless ``run.sync_bn`` on
GPUs), the first step's loss and gradients, every epoch's metrics and the final weights agree
with the 1-process run to float tolerance. The same launch trains the spiking SEMM test model
under DDP and checks that only rank 0 writes logs and checkpoints."""
import json
import runpy
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from spikemoe.engine import load_checkpoint, read_metrics

RECIPE = textwrap.dedent("""\
    model: {name: test_spikformer_semm, num_classes: 4}
    data: {batch_size: 8}
    optim: {lr: 1.0e-2, ema_decay: 0.9, clip_grad: 5.0}
    schedule: {epochs: 2, warmup_epochs: 1}
    run: {log_every: 4, progress: false, tensorboard: true}
""")

CHILD = textwrap.dedent("""\
    import json, sys
    import torch
    from spikemoe.engine import Trainer, load_config
    from spikemoe.engine.distributed import all_reduce_sum, cleanup_distributed
    from spikemoe.engine.synthetic import TinyANN, synthetic_bundle

    def first_step(cfg, name):
        torch.manual_seed(0)
        trainer = Trainer(load_config(cfg, [f"run.name={name}"]),
                          data=synthetic_bundle(n_test=30), model=TinyANN())
        trainer.sampler.set_epoch(0)
        x, y = next(iter(trainer.train_loader))
        loss, _ = trainer.forward_backward(x, y, 0)  # DDP averages the gradients over ranks
        loss = all_reduce_sum(loss.clone()) / trainer.dist.world_size
        grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters()}
        trainer.optimizer.zero_grad(set_to_none=True)
        return trainer, loss, grads

    if __name__ == "__main__":
        cfg, out = sys.argv[1], sys.argv[2]
        trainer, loss, grads = first_step(cfg, "ann")
        summary = trainer.fit()
        if trainer.dist.is_main:
            torch.save({"loss": loss, "grads": grads, "final": trainer.model.state_dict(),
                        "world": trainer.dist.world_size}, out)
        semm = Trainer(load_config(cfg, ["run.name=semm", "schedule.epochs=1"]),
                       data=synthetic_bundle(n_test=30))
        semm.fit()
        # an EM-trained model: each rank E-steps its shard, every rank stores all choices
        em = Trainer(load_config(cfg, ["run.name=em", "schedule.epochs=1", "optim.ema_decay=null",
                                       "model.name=test_modular", "model.e_step_every=2",
                                       "model.samples=3", "model.num_classes=4"]),
                     data=synthetic_bundle(n_test=30, size=8))
        start = [layer.stored.clone() for layer in em.model.em_layers()]
        em.fit()
        torch.save({"start": start, "end": [layer.stored for layer in em.model.em_layers()]},
                   f"{out}.em{em.dist.rank}.pt")
        cleanup_distributed()
""")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    (tmp / "recipe.yaml").write_text(RECIPE)
    (tmp / "child.py").write_text(CHILD)
    cfg2 = tmp / "two.yaml"
    cfg2.write_text(RECIPE.replace("run: {", f"run: {{out_dir: {tmp / 'two'}, "))
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone",
              "--nproc_per_node=2", str(tmp / "child.py"), str(cfg2), str(tmp / "two.pt")]
    proc = subprocess.run(launch, capture_output=True, text=True, timeout=240, check=False)
    if proc.returncode != 0 and "terminate called without an active exception" in proc.stderr:
        # A known gloo teardown abort (std::terminate in a rank after its work is done), seen
        # in about 1 of 10 launches on torch 2.14 CPU, also before this project's memory
        # savings existed: launch once more from scratch; any other failure fails the test.
        shutil.rmtree(tmp / "two", ignore_errors=True)
        proc = subprocess.run(launch, capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the 1-process reference, in this process, from the child's own functions
    namespace = runpy.run_path(str(tmp / "child.py"))  # not as __main__: defines, runs nothing
    cfg1 = tmp / "one.yaml"
    cfg1.write_text(RECIPE.replace("run: {", f"run: {{out_dir: {tmp / 'one'}, "))
    trainer, loss, grads = namespace["first_step"](cfg1, "ann")
    trainer.fit()
    one = {"loss": loss, "grads": grads, "final": trainer.model.state_dict(), "world": 1}
    return tmp, one, torch.load(tmp / "two.pt", weights_only=True)


def test_two_processes_match_one_on_the_same_global_batch(runs):
    tmp, one, two = runs
    assert (one["world"], two["world"]) == (1, 2)
    assert torch.allclose(one["loss"], two["loss"], rtol=1e-6, atol=1e-7)
    for name, g in one["grads"].items():
        assert g.abs().sum() > 0
        assert torch.allclose(g, two["grads"][name], rtol=1e-5, atol=1e-8), name
    for name, w in one["final"].items():  # 16 AdamW steps later
        assert torch.allclose(w, two["final"][name], rtol=1e-4, atol=1e-6), name
    e1 = read_metrics(tmp / "one" / "ann" / "metrics.jsonl", "epoch")
    e2 = read_metrics(tmp / "two" / "ann" / "metrics.jsonl", "epoch")
    assert len(e1) == len(e2) == 2
    for a, b in zip(e1, e2):
        assert a["test/top1"] == b["test/top1"]  # every test sample counted once over ranks
        assert a["train/top1"] == b["train/top1"]
        assert a["train/loss"] == pytest.approx(b["train/loss"], rel=1e-5)
        assert a["train/hidden_rate"] == pytest.approx(b["train/hidden_rate"], rel=1e-5)
        assert a["lr"] == b["lr"]
    assert e1[-1]["test/top1"] > 50  # it learned (4 classes: chance is 25%)
    assert "test/top5" not in e1[-1]  # 4 classes: top-5 does not apply


def test_an_em_model_keeps_identical_stored_choices_on_every_rank(runs):
    tmp, _, _ = runs
    r0, r1 = (torch.load(tmp / f"two.pt.em{r}.pt", weights_only=True) for r in (0, 1))
    for a, b, s in zip(r0["end"], r1["end"], r0["start"]):
        assert torch.equal(a, b)  # every rank applied every rank's E-step choices
        assert not torch.equal(a, s)  # and the E-steps moved some choices
    for s0, s1 in zip(r0["start"], r1["start"]):
        assert torch.equal(s0, s1)  # the random start depends on run.seed only, not the rank


def test_only_rank_zero_writes_and_spiking_models_train_under_ddp(runs):
    tmp, _, _ = runs
    run = tmp / "two" / "semm"
    records = read_metrics(run / "metrics.jsonl")
    assert [r["kind"] for r in records] == ["step", "step", "epoch", "final"]  # not doubled
    assert len(list((run / "tb").glob("events.out.tfevents.*"))) == 1
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2  # both ranks' random streams
    assert not torch.equal(ckpt["rng"][0]["torch"], ckpt["rng"][1]["torch"])
    assert (run / "checkpoints" / "best.pt").is_file() and (run / "config.yaml").is_file()
    assert json.loads((run / "summary.json").read_text())["steps"] == 8
