"""A real EM-trained model (``test_modular``: 2 modular conv layers, M = 3, K = 1, E-step every
3rd step) SIGKILLed mid-epoch and resumed ends bit-identical to a run never stopped: weights,
optimiser state and every example's stored choice.

64 synthetic [T=2, 2, 8, 8] samples, batch 8: 8 steps per epoch, 3 epochs = 24 steps, E-steps
at steps 0, 3, 6, ...; a checkpoint every 3 steps; the kill lands after the first one."""
import sys
import textwrap

import torch

from spikemoe.engine import Trainer, load_checkpoint, load_config
from spikemoe.engine.synthetic import synthetic_bundle

RECIPE = textwrap.dedent("""\
    model: {name: test_modular, e_step_every: 3, samples: 4}
    data: {batch_size: 8}
    optim: {lr: 3.0e-3, label_smoothing: 0.0}
    schedule: {epochs: 3, warmup_epochs: 1}
    augment: {mixup_alpha: 0.0, cutmix_alpha: 0.0}
    run: {log_every: 3, progress: false, tensorboard: false, profile_samples: 0}
""")
CHILD = textwrap.dedent("""\
    import sys
    from spikemoe.engine import Trainer, load_config
    from spikemoe.engine.synthetic import synthetic_bundle
    cfg = load_config(sys.argv[1], sys.argv[2:])
    Trainer(cfg, data=synthetic_bundle(64, 16, size=8, num_classes=10, delay_s=0.01)).fit()
""")


def _data():
    return synthetic_bundle(64, 16, size=8, num_classes=10)


def _cfg(tmp_path, *overrides):
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    return load_config(tmp_path / "recipe.yaml", [f"run.out_dir={tmp_path}", *overrides])


def _stored(model) -> list[torch.Tensor]:
    return [layer.stored.clone() for layer in model.em_layers()]


def test_sigkill_mid_epoch_then_resume_keeps_weights_and_stored_choices(tmp_path, kill_once_written):
    ref = Trainer(_cfg(tmp_path, "run.name=ref"), data=_data())
    initial = _stored(ref.model)
    ref.fit()
    assert any(not torch.equal(a, b) for a, b in zip(initial, _stored(ref.model)))  # E-steps moved

    (tmp_path / "child.py").write_text(CHILD)
    last = tmp_path / "k" / "checkpoints" / "last.pt"
    kill_once_written([sys.executable, str(tmp_path / "child.py"), str(tmp_path / "recipe.yaml"),
                       f"run.out_dir={tmp_path}", "run.name=k", "run.save_every_steps=3"], last)
    step = load_checkpoint(last)["step"]
    assert 0 < step < 24 and step % 8 != 0, f"checkpoint at step {step}"
    resumed = Trainer(_cfg(tmp_path, "run.name=k", f"resume={tmp_path / 'k'}"), data=_data())
    assert resumed.step == step
    resumed.fit()
    for a, b in zip(_stored(ref.model), _stored(resumed.model)):
        assert torch.equal(a, b)
    for (name, a), b in zip(ref.model.state_dict().items(), resumed.model.state_dict().values()):
        if torch.is_tensor(a):
            assert torch.equal(a, b), name
    opt_a, opt_b = ref.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    for i in opt_a:
        assert torch.equal(opt_a[i]["exp_avg"], opt_b[i]["exp_avg"]), i
