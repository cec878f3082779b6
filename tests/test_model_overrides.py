"""Model overrides of the spiking families are range-checked before any module is built,
and the error names the key as a config writes it (``model.expert_dim``), the value found
and what works instead (issue 11, item 5)."""
import pytest
import torch

import spikemoe
from spikemoe.models import spiking_vit

# (model, overrides, pieces the message must hold). The test twins: 2x16x16 input, 4x4
# patches (two pooling stages), embed_dim 32, 4 heads / 4 experts, T=2.
BAD = [
    ("test_spikformer_semm", {"num_experts": 0}, ["model.num_experts", ">= 1", "got 0"]),
    ("test_spikformer_semm", {"num_experts": -1}, ["model.num_experts", "got -1"]),
    ("test_spike_driven_semm", {"expert_dim": 0}, ["model.expert_dim", ">= 1", "got 0"]),
    ("test_spike_driven_semm", {"expert_dim": -4}, ["model.expert_dim", "got -4"]),
    ("test_spikformer", {"depth": 0}, ["model.depth", ">= 1", "got 0"]),
    ("test_spike_driven", {"T": 0}, ["model.T", "got 0"]),
    ("test_spikformer", {"T": 2.5}, ["model.T", "got 2.5"]),  # was truncated to 2 silently
    # 18 is not a multiple of the 4x4 patch: the message names the patch and the neighbours.
    ("test_spikformer", {"img_size": [18, 16]}, ["model.img_size=[18, 16]", "multiples of 4",
                                                 "H=18 -> 16 or 20"]),
    ("test_spikformer", {"img_size": 2}, ["model.img_size=[2, 2]", "H=2 -> 4"]),
    ("spikformer_2_256_dvs", {"img_size": [100, 128]}, ["multiples of 16", "H=100 -> 96 or 112"]),
    ("test_spikformer", {"img_size": "32"}, ["model.img_size must be [H, W]"]),
    ("test_spikformer", {"embed_dim": 36}, ["model.embed_dim", "multiple of 8", "32, 40"]),
    ("test_spikformer", {"embed_dim": 0}, ["model.embed_dim", ">= 8", "got 0"]),
    ("test_spikformer", {"num_heads": 3}, ["model.num_heads=3", "model.embed_dim=32",
                                           "1, 2, 4, 8, 16, 32"]),
    ("test_spikformer_semm", {"num_experts": 3}, ["model.num_experts=3", "model.expert_dim"]),
    ("test_spikformer_semm", {"per_expert": []}, ["model.per_expert", "got []"]),
    ("test_spikformer_semm", {"per_expert": ["q", "x"]}, ["model.per_expert"]),
    ("test_spikformer_semm", {"emsp_hidden": 7}, ["model.emsp_hidden", "even", "6 or 8"]),
    ("test_spikformer_semm", {"emsp_hidden": 0}, ["model.emsp_hidden", "got 0"]),
    ("test_spikformer", {"mlp_hidden": 0}, ["model.mlp_hidden", "got 0"]),
    ("test_spikformer", {"num_classes": 1}, ["model.num_classes", ">= 2", "got 1"]),
    ("test_spikformer", {"in_channels": 0}, ["model.in_channels", "got 0"]),
    ("test_spikformer", {"attn_scale": -1.0}, ["model.attn_scale", "> 0", "got -1.0"]),
    ("test_spikformer", {"emsa": "yes"}, ["model.emsa", "true or false"]),
    ("test_spikformer", {"pools": [True, True]}, ["model.pools", "4 booleans"]),
    ("test_spikformer", {"backend": "gpu"}, ["model.backend", "auto"]),
    ("test_spikformer", {"style": "vit"}, ["model.style", "spikformer, spike_driven"]),
]


def _forbid_building(monkeypatch):
    """Make every sub-module constructor of the backbone fail loudly if it is reached."""
    def built(*args, **kwargs):
        raise AssertionError("a module was built before the overrides were checked")

    for cls in ("SpikingPatchSplit", "EMSA", "EMSP", "HeadwiseSpikingAttention", "SpikingMLP"):
        monkeypatch.setattr(spiking_vit, cls, built)


@pytest.mark.parametrize(("name", "overrides", "pieces"), BAD,
                         ids=[f"{n}-{'-'.join(map(str, o.items()))}" for n, o, _ in BAD])
def test_bad_override_raises_before_building_and_names_the_key(monkeypatch, name, overrides,
                                                               pieces):
    _forbid_building(monkeypatch)
    with pytest.raises(ValueError) as err:
        spikemoe.create_model(name, **overrides)
    msg = str(err.value)
    assert msg.startswith(f"{name}: ")
    for piece in pieces:
        assert piece in msg, (piece, msg)


@pytest.mark.parametrize(("name", "overrides", "key"), [
    ("test_spikformer", {"num_experts": 8}, "model.num_experts=8"),   # no EMSA to use them
    ("test_spike_driven", {"expert_dim": 8}, "model.expert_dim=8"),
    ("test_spikformer", {"emsp_hidden": 64}, "model.emsp_hidden=64"),  # plain MLP
    ("test_spikformer_semm", {"num_heads": 8}, "model.num_heads=8"),   # EMSA: heads = experts
    ("test_spikformer_semm", {"mlp_hidden": 64}, "model.mlp_hidden=64"),  # EMSP, no MLP
    ("test_spike_driven", {"attn_scale": 0.5}, "model.attn_scale"),   # SDSA has no scale
    # Switching EMSA off while keeping an expert override: the override would be ignored.
    ("test_spikformer_semm", {"emsa": False, "num_experts": 2}, "model.num_experts=2"),
])
def test_an_override_the_model_would_ignore_is_refused(name, overrides, key):
    with pytest.raises(ValueError, match="would have no effect") as err:
        spikemoe.create_model(name, **overrides)
    assert key in str(err.value)


def test_unknown_override_key_names_the_nearest_one():
    with pytest.raises(ValueError, match="did you mean 'expert_dim'") as err:
        spikemoe.create_model("test_spikformer_semm", expert_dims=8)
    assert "model.KEY=VALUE" in str(err.value)


def test_every_paper_factory_checks_its_overrides():
    # The checks live in the shared backbone: every registered spiking factory has them.
    names = spikemoe.list_models("spikformer*") + spikemoe.list_models("spike_driven*") \
        + spikemoe.list_models("spikingformer*") + spikemoe.list_models("test_spik*")
    assert len(names) == 32  # 10 + 10 + 6 paper sizes and 6 test twins
    for name in names:
        with pytest.raises(ValueError, match=r"model\.depth must be an integer >= 1"):
            spikemoe.create_model(name, depth=0)


def test_valid_edge_values_still_build_and_run():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 2, 20, 20)  # [T, B, C, H, W]
    # One integer img_size is a square; 20 = 5 patches of 4.
    model = spikemoe.create_model("test_spikformer", img_size=20, T=1).eval()
    assert model.img_size == (20, 20) and model.input_shape == (1, 2, 20, 20)
    assert model(x).logits.shape == (3, 10)
    # 3 experts of width 5 (expert_dim need not divide embed_dim); a single per-expert name.
    for name in ("test_spikformer_semm", "test_spike_driven_semm"):
        model = spikemoe.create_model(name, num_experts=3, expert_dim=5, per_expert="k",
                                      emsp_hidden=2, img_size=[20, 20]).eval()
        assert model.blocks[0].attn.num_experts == 3 and model.blocks[0].attn.head_dim == 5
        assert model.blocks[0].attn.per_head == ("k",)
        assert model(x).logits.shape == (3, 10)
