"""The trainer's side of EM-trained models (``contract.ExampleChoices``): example indices reach
the model, E-steps come every n-th step and take no M-step, stored choices live in the
checkpoint, and a stopped run resumes to the same weights and choices.

Toy: a linear classifier whose logits get a learned offset per stored choice (2 choices).
``e_step`` flips each example's stored choice (so its effect is visible and countable) and
records what it was given. 64 synthetic examples, batch 16: 4 steps per epoch, 2 epochs = 8
steps; with ``e_step_every = 3`` the E-steps are at steps 0, 3 and 6 (3 of the 8 steps), so
the optimiser takes 5 steps."""
import textwrap

import torch
from torch import nn

from spikemoe.contract import ExampleChoices, ModelOutput, SpikeMoEModel, model_facts
from spikemoe.engine import Trainer, load_config
from spikemoe.engine.synthetic import synthetic_bundle


class ToyEM(SpikeMoEModel, ExampleChoices):
    e_step_every = 3
    num_classes = 4

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2 * 16 * 16, 4)
        self.offset = nn.Parameter(torch.zeros(2, 4))
        self.choices = torch.zeros(0, dtype=torch.int64)
        self.seen: list[tuple[str, list[int]]] = []  # (call, indices) in order

    def attach_examples(self, num_examples: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.choices = torch.randint(0, 2, (num_examples,), generator=g)

    def get_extra_state(self) -> dict:
        return {"choices": self.choices.clone()}

    def set_extra_state(self, state: dict) -> None:
        self.choices = state["choices"].clone()

    def forward(self, x, index=None) -> ModelOutput:
        logits = self.fc(x.mean(0).flatten(1))  # [T, B, 2, 16, 16] -> [B, 4]
        if index is not None:
            self.seen.append(("forward", index.tolist()))
            logits = logits + self.offset[self.choices[index]]
        return ModelOutput(logits, logits.new_zeros(()), {})

    def e_step(self, x, y, index):
        self.seen.append(("e_step", index.tolist()))
        return 1 - self.choices[index], {"flipped": torch.tensor(float(len(index)))}

    def store_choices(self, index, chosen) -> None:
        self.choices[index] = chosen


def _cfg(tmp_path, *items):
    (tmp_path / "r.yaml").write_text(textwrap.dedent("""\
        model: {name: unused}
        data: {name: digits-dvs, batch_size: 16}
        optim: {lr: 1.0e-2}
        schedule: {epochs: 2, warmup_epochs: 0}
        augment: {mixup_alpha: 0.0, cutmix_alpha: 0.0}
        run: {log_every: 1, progress: false, profile_samples: 0, tensorboard: false}
    """))
    return load_config(tmp_path / "r.yaml", [f"run.out_dir={tmp_path}", *items])


def test_indices_e_steps_and_checkpointed_choices(tmp_path):
    torch.manual_seed(0)
    model = ToyEM()
    assert model_facts(model).e_step_every == 3 and not model_facts(model).m_step_on_e_step
    trainer = Trainer(_cfg(tmp_path, "run.name=a"), data=synthetic_bundle(64, 16), model=model)
    start = model.choices.clone()
    assert len(start) == 64  # attach_examples(len(train set), run.seed)
    summary = trainer.fit()
    calls = [c for c, _ in model.seen]
    assert summary["steps"] == 8 and calls.count("e_step") == 3 and calls.count("forward") == 5
    assert calls[0] == calls[3] == calls[6] == "e_step"
    # every E-step was handed the indices of its batch; each epoch visits every example once
    epoch1 = sorted(i for _, idx in model.seen[:4] for i in idx)
    assert epoch1 == list(range(64))
    flips = torch.zeros(64, dtype=torch.int64)
    for call, idx in model.seen:
        if call == "e_step":
            flips[idx] += 1
    assert torch.equal(model.choices, (start + flips) % 2)
    # the stored choices are in the checkpoint, and a fresh model (never attached) loads them
    state = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=True)
    fresh = ToyEM()
    fresh.load_state_dict(state["model"])
    assert torch.equal(fresh.choices, model.choices)
    events = (tmp_path / "a" / "metrics.jsonl").read_text()
    assert events.count('"event": "e_step"') == 3


def test_a_stopped_em_run_resumes_to_the_same_weights_and_choices(tmp_path):
    torch.manual_seed(0)
    ref = ToyEM()
    Trainer(_cfg(tmp_path, "run.name=ref"), data=synthetic_bundle(64, 16), model=ref).fit()
    torch.manual_seed(0)
    first = ToyEM()
    Trainer(_cfg(tmp_path, "run.name=r", "run.stop_after_steps=5"),
            data=synthetic_bundle(64, 16), model=first).fit()
    resumed = ToyEM()
    Trainer(_cfg(tmp_path, "run.name=r", f"resume={tmp_path / 'r'}"),
            data=synthetic_bundle(64, 16), model=resumed).fit()
    assert torch.equal(resumed.choices, ref.choices)
    for (k, a), b in zip(ref.state_dict().items(), resumed.state_dict().values()):
        if torch.is_tensor(a):
            assert torch.equal(a, b), k
