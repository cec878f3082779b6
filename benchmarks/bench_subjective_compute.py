"""Compute savings of the Subjective Depth / Timescale Transformers at gamma = 0.5 against
their dense causal twin, MEASURED on the same input: attention FLOPs from counted
operations, KV-cache entries from streaming inference.

    attention     multiply-adds of Q K^T and A V (the ``kind == "matmul"`` records of
                  ``spikemoe.analysis.count_operations``, which counts only matmuls that ran),
                  per layer (``layers.<i>...``) and in total
    linear        the weight matmuls (projections, SwiGLU, routers, prior/TPN, embeddings, head)
    KV cache      entries that ``model.stream`` wrote per layer (tokens fed one at a time;
                  routed layers cache only the tokens they select)

Inference selects at fixed capacity: ``eval_selection="router_topk"`` (top-k of the causal
router's logits, k = floor(gamma N)), and the stream replays that selection, so the ratios
are exact: routed layers 25% of dense attention (-75%) and 50% of the KV cache (-50%); with
every other layer routed the whole model has 62.5% of dense attention and 75% of its cache
(papers.md section 5). Models: the ``*_lm_small`` byte LMs at initialisation (width 128,
4 layers, 4 heads) on a 128-byte window of stdlib-bytes.

    python benchmarks/bench_subjective_compute.py [--tokens 128] [--gamma 0.5]
"""
from __future__ import annotations

import argparse

import torch

import spikemoe
from spikemoe.analysis import count_operations

FAMILIES = ("causal_transformer", "subjective_depth", "subjective_timescale")


def measure(model, x) -> dict:
    """Counted attention and linear MACs per layer, and KV entries per layer, for ``x``."""
    counter, out = count_operations(model, x)
    attn: dict[int, int] = {}
    linear = 0
    for r in counter.layer_records():
        if r.kind == "matmul" and r.layer.startswith("layers."):
            i = int(r.layer.split(".")[1])
            attn[i] = attn.get(i, 0) + r.dense_macs
        elif r.kind == "linear":
            linear += r.dense_macs
    select = {i: out.metrics[f"layers.{i}.mask"] for i in model.routed_layers}
    _, state = model.stream(x, select=select or None)
    return {"attn": attn, "linear": linear, "kv": state.kv_entries(),
            "routed": model.routed_layers}


def _sample(tokens: int) -> torch.Tensor:
    try:
        from spikemoe.data import create_dataset

        x, _ = create_dataset("stdlib-bytes", "test", T=tokens)[0]
        return x[None]  # [N] -> [1, N]
    except (OSError, ValueError):  # no standard library sources here: random bytes
        return torch.randint(0, 256, (1, tokens), generator=torch.Generator().manual_seed(0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--gamma", type=float, default=0.5)
    args = ap.parse_args()
    x = _sample(args.tokens)
    results = {}
    for family in FAMILIES:
        torch.manual_seed(0)
        kw = {} if family == "causal_transformer" else {"eval_selection": "router_topk",
                                                        "gamma": args.gamma}
        model = spikemoe.create_model(f"{family}_lm_small", T=args.tokens, **kw).eval()
        results[family] = measure(model, x)
    dense = results["causal_transformer"]
    print(f"input: {x.shape[1]} bytes of stdlib-bytes, batch 1; gamma = {args.gamma}; "
          "counted by spikemoe.analysis.count_operations\n")
    print(f"{'model':22s} {'attn routed':>12s} {'attn total':>12s} {'linear':>9s} "
          f"{'KV routed':>10s} {'KV total':>9s}   per-layer attention MACs")
    routed = results["subjective_depth"]["routed"]  # (1, 3): the same indices in STT
    for family, r in results.items():
        a_routed = sum(r["attn"][i] for i in routed) / sum(dense["attn"][i] for i in routed)
        a_total = sum(r["attn"].values()) / sum(dense["attn"].values())
        kv_routed = sum(r["kv"][i] for i in routed) / sum(dense["kv"][i] for i in routed)
        kv_total = sum(r["kv"]) / sum(dense["kv"])
        layers = ", ".join(f"{i}: {r['attn'][i]:,}" for i in sorted(r["attn"]))
        print(f"{family:22s} {a_routed:12.1%} {a_total:12.1%} {r['linear'] / dense['linear']:9.1%} "
              f"{kv_routed:10.1%} {kv_total:9.1%}   {layers}")
    print("\npaper (gamma = 0.5): routed-layer attention 25% (-75%), KV cache 50% (-50%), "
          "whole-model attention 62.5%; ratios are to the dense twin (100%). Layers 1 and 3 "
          "are the routed ones; the dense twin's same layers are the reference.")


if __name__ == "__main__":
    main()
