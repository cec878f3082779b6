"""Compute savings of SDT / STT at gamma = 0.5 against the dense causal twin, from COUNTED
operations (``spikemoe.analysis.count_operations``: only matmuls that ran are counted) and
from the KV cache that streaming inference actually filled; the paper's ratios are exact at
fixed capacity (``benchmarks/bench_subjective_compute.py`` prints the same figures)."""
import pytest
import torch

import spikemoe
from spikemoe.analysis import count_operations

N, DIM, HEADS, DEPTH = 16, 32, 2, 4  # layers 1 and 3 routed (SDT: dynamic; STT: odd)


# fixed-capacity router top-k: a compute measurement, not a perplexity
pytestmark = pytest.mark.filterwarnings("ignore:.*not a causal language-model score")


def _model(name):
    torch.manual_seed(0)
    return spikemoe.create_model(name, task="lm", T=N, depth=DEPTH, dim=DIM, num_heads=HEADS,
                                 **({} if name == "test_causal_transformer"
                                    else {"eval_selection": "router_topk"})).eval()


def attention_macs_per_layer(model, x) -> dict[int, int]:
    """Counted multiply-adds of the activation-by-activation matmuls (``Q K^T`` and ``A V``,
    ``kind == "matmul"``) per layer index, read from the layer name ``layers.<i>...#k``."""
    counter, _ = count_operations(model, x)
    per_layer: dict[int, int] = {}
    for r in counter.layer_records():
        if r.kind == "matmul" and r.layer.startswith("layers."):
            i = int(r.layer.split(".")[1])
            per_layer[i] = per_layer.get(i, 0) + r.dense_macs
    return per_layer


def test_dense_attention_count_is_hand_arithmetic():
    x = torch.randint(0, 256, (1, N), generator=torch.Generator().manual_seed(0))
    dense = attention_macs_per_layer(_model("test_causal_transformer"), x)
    # per layer: Q K^T = H N d_h N = 2 * 16 * 16 * 16 = 8192, A V the same: 16384
    assert dense == {i: 16384 for i in range(DEPTH)}


@pytest.mark.parametrize("name", ["test_subjective_depth", "test_subjective_timescale"])
def test_counted_attention_and_kv_cache_at_gamma_half(name):
    x = torch.randint(0, 256, (1, N), generator=torch.Generator().manual_seed(0))
    dense = attention_macs_per_layer(_model("test_causal_transformer"), x)
    model = _model(name)
    routed = attention_macs_per_layer(model, x)
    assert model.routed_layers == (1, 3)
    for i in range(DEPTH):
        # routed layer: k = 8 of 16 tokens attend among themselves: (8/16)^2 = 25% (-75%);
        # the other layers (SDT's decision layers, STT's even layers) run densely
        assert routed[i] / dense[i] == (0.25 if i in model.routed_layers else 1.0)
    # whole model, every other layer routed: (1 + 0.25) / 2 = 62.5% of dense attention
    assert sum(routed.values()) / sum(dense.values()) == 0.625

    # KV cache of streaming inference with the same gamma = 0.5 selection (replayed)
    full = model(x)
    select = {i: full.metrics[f"layers.{i}.mask"] for i in model.routed_layers}
    _, state = model.stream(x, select=select)
    _, dense_state = _model("test_causal_transformer").stream(x)
    assert dense_state.kv_entries() == [16, 16, 16, 16]
    assert state.kv_entries() == [16, 8, 16, 8]  # routed layers: -50%; whole cache 48/64 = 75%
