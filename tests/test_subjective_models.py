"""The dense causal twin, SDT and STT: input contract, gradients, causality (no output at
position t reads a token after t) in training and inference, and streaming with a KV cache
(equal to the whole-sequence forward; routed layers cache only the tokens they select)."""
import pytest
import torch

import spikemoe

FAMILIES = ["test_causal_transformer", "test_subjective_depth", "test_subjective_timescale"]
ROUTED = ["test_subjective_depth", "test_subjective_timescale"]


def _lm(name, **kw):
    """The tiny twin as a byte-level LM (per-token logits), 4 layers (2 routed), seeded."""
    torch.manual_seed(0)
    return spikemoe.create_model(name, task="lm", T=12, depth=4, **kw)


def _ids(B=2, N=12, seed=1):
    return torch.randint(0, 256, (B, N), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", FAMILIES)
def test_input_contract_shapes_and_attributes(name):
    torch.manual_seed(0)
    model = spikemoe.create_model(name).eval()
    assert model.input_shape == (2, 2, 16, 16) and model.num_classes == 10 and model.T == 2
    frames = torch.rand(2, 3, 2, 16, 16)  # [T, B, C, H, W]: 2 tokens, one per frame
    out = model(frames)
    assert isinstance(out, spikemoe.ModelOutput) and out.logits.shape == (3, 10)
    assert torch.equal(model(frames).logits, out.logits)  # no state between calls
    assert model(torch.rand(5, 1, 2, 16, 16)).logits.shape == (1, 10)  # any number of frames
    torch.manual_seed(0)
    images = spikemoe.create_model(name, input_kind="images").eval()
    assert images.input_shape == model.input_shape
    assert images(torch.rand(4, 2, 16, 16)).logits.shape == (4, 10)  # image: 16 patch tokens
    # each builds the embedding of its own input only; one seed, the same other weights
    frame_sd, image_sd = model.state_dict(), images.state_dict()
    assert {k for k in frame_sd if "embed" in k} == {"frame_embed.weight", "frame_embed.bias"}
    assert {k for k in image_sd if "embed" in k} == {"patch_embed.weight", "patch_embed.bias"}
    assert {k for k in frame_sd if "embed" not in k} == {k for k in image_sd if "embed" not in k}
    assert all(torch.equal(v, image_sd[k]) for k, v in frame_sd.items() if "embed" not in k)
    bad = [(2, 16, 16), (2, 3, 3, 16, 16), (2, 3, 2, 15, 16), (4, 2, 15, 16)]
    for m, shape in [(model, s) for s in [*bad, (4, 2, 16, 16)]] + \
            [(images, s) for s in [*bad, (2, 3, 2, 16, 16)]]:
        with pytest.raises(ValueError) as err:
            m(torch.zeros(shape))
        msg = str(err.value)
        assert str(shape) in msg and "[T, B, 2, H, W]" in msg and "[B, 2, H, W]" in msg
    lm = spikemoe.create_model(name, task="lm")
    assert lm.input_shape == (2,) and lm.num_classes == 256
    with pytest.raises(ValueError, match=r"\[B, N\] integer byte ids"):
        lm(torch.rand(2, 5))


def test_a_state_dict_holding_both_embeddings_loads_into_either_classifier():
    # the embedding of the other input kind is dropped on load; the own one stays required
    frames = spikemoe.create_model("test_causal_transformer")
    images = spikemoe.create_model("test_causal_transformer", input_kind="images")
    both = {**frames.state_dict(), **images.state_dict()}
    frames.load_state_dict(both)
    images.load_state_dict(both)
    assert torch.equal(frames.frame_embed.weight, both["frame_embed.weight"])
    with pytest.raises(RuntimeError, match="patch_embed.weight"):
        images.load_state_dict(frames.state_dict())


@pytest.mark.parametrize("name", FAMILIES)
def test_every_parameter_gets_a_finite_gradient(name):
    torch.manual_seed(0)
    # every parameter trains: DistributedDataParallel needs no find_unused_parameters
    images = spikemoe.create_model(name, input_kind="images").train()
    out = images(torch.rand(3, 2, 16, 16))  # 16 patch tokens
    (torch.nn.functional.cross_entropy(out.logits, torch.arange(3)) + out.aux_loss).backward()
    for pname, p in images.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    model = spikemoe.create_model(name).train()
    out = model(torch.rand(4, 3, 2, 16, 16))  # 4 frame tokens
    (torch.nn.functional.cross_entropy(out.logits, torch.arange(3)) + out.aux_loss).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} received no gradient"
        assert torch.isfinite(p.grad).all(), pname
    if name != "test_causal_transformer":
        assert out.aux_loss > 0  # prior / TPN MSE + router BCE
        assert out.metrics["layers.1.selected"] == 0.5  # top-k of 4 frames: k = 2
        assert out.metrics["layers.1.mask"].shape == (3, 4)
        assert 0 <= out.metrics["layers.1.router_agreement"] <= 1


def _assert_causal(model, select=None):
    x = _ids()
    base = model(x, select=select).logits
    for t in (0, 4, 10):
        y = x.clone()
        y[:, t + 1:] = (y[:, t + 1:] + 17) % 256  # change every later token
        torch.testing.assert_close(model(y, select=select).logits[:, :t + 1], base[:, :t + 1])
        assert not torch.allclose(model(y, select=select).logits[:, t + 1:], base[:, t + 1:])


@pytest.mark.parametrize("name", FAMILIES)
def test_inference_is_causal(name):
    # eval: the causal router picks tokens (logit > 0) before the block runs
    _assert_causal(_lm(name).eval())


@pytest.mark.parametrize("name", ROUTED)
def test_training_with_threshold_selection_is_causal(name):
    # g_t reads tokens <= t (its block's causal attention, the previous token's output,
    # the causal moving average), so g >= threshold selects causally
    model = _lm(name, selection="threshold").train()
    # at initialisation every g is ~0.753 (tiny residuals: CE ~ log 1.025, CU ~ 0); a
    # threshold at layer 1's mean gate selects some tokens and skips others
    model.threshold = float(model(_ids()).metrics["layers.1.gate_mean"])
    assert 0 < model(_ids()).metrics["layers.1.selected"] < 1
    _assert_causal(model)


@pytest.mark.parametrize("name", ROUTED)
def test_training_with_topk_is_causal_given_the_selection(name):
    # Which tokens top-k picks depends on later gates (it is the training-time teacher,
    # replaced by the causal router at inference); given the selection, no output reads a
    # later token: selected tokens stay in time order within their own sequence.
    model = _lm(name).train()
    select = {i: torch.tensor([[True, False] * 6, [False, True] * 6]) for i in model.routed_layers}
    _assert_causal(model, select)
    out = model(_ids())
    for i in model.routed_layers:
        assert out.metrics[f"layers.{i}.mask"].sum(1).tolist() == [6, 6]  # k = floor(.5 * 12)


@pytest.mark.parametrize("name", FAMILIES)
def test_streaming_with_a_kv_cache_equals_the_whole_sequence(name):
    model = _lm(name).eval()
    x = _ids()
    full = model(x)
    logits, state = model.stream(x)
    torch.testing.assert_close(logits, full.logits, rtol=1e-4, atol=1e-5)
    entries = state.kv_entries()
    for i, n in enumerate(entries):
        if i in model.routed_layers:  # only the tokens the router selected wrote K/V
            assert n == int(full.metrics[f"layers.{i}.mask"].sum())
        else:
            assert n == 2 * 12  # dense layer: every token of both sequences
    # the classifier streams too: one frame per step, logits of the last frame
    clf = spikemoe.create_model(name).eval()
    frames = torch.rand(5, 2, 2, 16, 16)
    torch.testing.assert_close(clf.stream(frames)[0], clf(frames).logits, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="call model.eval"):
        clf.train().stream(frames)


@pytest.mark.filterwarnings("ignore:.*not a causal language-model score")  # compute, not ppl
@pytest.mark.parametrize("name", ROUTED)
def test_only_selected_tokens_write_the_routed_layers_kv_cache(name):
    model = _lm(name, eval_selection="router_topk").eval()
    x = _ids()
    full = model(x)
    select = {i: full.metrics[f"layers.{i}.mask"] for i in model.routed_layers}
    with pytest.raises(ValueError, match="streaming chooses tokens causally"):
        model.stream(x)  # top-k over the router needs the whole sequence
    logits, state = model.stream(x, select=select)  # replay the gamma = 0.5 selection
    torch.testing.assert_close(logits, full.logits, rtol=1e-4, atol=1e-5)
    # 2 sequences x 12 tokens: dense layers 24 entries, routed layers k = 6 each -> 12
    assert state.kv_entries() == [24, 12, 24, 12]
    for i in model.routed_layers:
        kv = state.kv[i]
        assert torch.equal(kv.valid.sum(1), torch.tensor([6, 6]))
        # the valid entries are exactly the selected positions, in time order
        for b in range(2):
            written = kv.positions[b][kv.valid[b]]
            assert written.tolist() == torch.nonzero(select[i][b]).flatten().tolist()


def test_teacher_evaluation_and_bad_settings():
    x = _ids()
    sdt = _lm("test_subjective_depth", eval_selection="teacher").eval()
    with pytest.warns(UserWarning, match="not a causal language-model score"):
        assert sdt(x).metrics["layers.1.selected"] == 0.5  # top-k of g, as in training
    stt = _lm("test_subjective_timescale", eval_selection="teacher").eval()
    with pytest.warns(UserWarning, match="not a causal language-model score"):
        out = stt(x)
    assert out.metrics["layers.1.selected"] == 0.5 and "layers.1.tpn_loss" in out.metrics
    with pytest.raises(ValueError, match="depth must be even"):
        spikemoe.create_model("test_subjective_timescale", depth=3)
    with pytest.raises(ValueError, match="eval_selection must be one of"):
        spikemoe.create_model("test_subjective_depth", eval_selection="oracle")
    with pytest.raises(ValueError, match="did you mean 'gamma'"):
        spikemoe.create_model("test_subjective_depth", gama=0.25)


def test_sdt_prior_loss_trains_the_prior_network_only():
    """The prior loss detaches the residual stream (see DecisionLayer): its gradient reaches
    the prior network and nothing upstream of the layer, nor the posterior block."""
    from spikemoe.models.subjective_depth import DecisionLayer

    torch.manual_seed(0)
    layer = DecisionLayer(16, 2, 32, 4, 10000.0, {})
    x = torch.randn(1, 5, 16, requires_grad=True)
    positions = torch.arange(5).expand(1, 5)
    _, _, prior_loss = layer(x, positions)
    prior_loss.backward()
    assert x.grad is None or torch.count_nonzero(x.grad) == 0
    assert all(p.grad is None for p in layer.block.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.prior_ffn.parameters())
