"""``spikemoe export``: ONNX checked against onnxruntime, NIR of the expressible part with the
per-layer refusal table, and the error when the optional packages are missing."""
import json
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from spikemoe.cli import main  # noqa: E402
from spikemoe.contract import model_facts  # noqa: E402
from spikemoe.engine.export_onnx import (  # noqa: E402
    ExportDependencyError,
    example_input,
    export_onnx,
    load_export_model,
)


def _ort_logits(path, x):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    return inp, sess.run(None, {inp.name: x.numpy()})[0]


@pytest.mark.parametrize("name", ["test_spikformer", "test_spikformer_semm", "test_spike_driven",
                                  "test_vit", "test_vmoe"])
def test_onnx_matches_torch_on_a_fresh_input(name, tmp_path, excite):
    model, _ = load_export_model(model_name=name)
    if name.startswith("test_spik"):
        excite(model)  # untrained nets barely fire: make every layer spike
    result = export_onnx(model, tmp_path / f"{name}.onnx", exporter="torchscript")
    assert result.max_abs_diff < 1e-4
    # an input the export never saw (seed 7), run by onnxruntime from the file
    batch = result.input_shape[1] if len(result.input_shape) == 5 else result.input_shape[0]
    x = example_input(model, batch, seed=7)
    inp, got = _ort_logits(result.path, x)
    with torch.no_grad():
        ref = model(x).logits.numpy()
    assert np.abs(got - ref).max() < 1e-4
    assert ref.std() > 0  # the logits depend on the input: the check is not 0 == 0
    t, *chw = model_facts(model).input_shape  # [T, C, H, W] -> graph input [T, B, C, H, W]
    assert inp.shape == [t, batch, *chw]
    assert result.size_bytes == result.path.stat().st_size > 0


def test_vmoe_exports_at_its_routing_batch_densely(tmp_path):
    model, _ = load_export_model(model_name="test_vmoe")
    result = export_onnx(model, tmp_path / "vmoe.onnx", exporter="torchscript")
    assert result.input_shape[1] == model_facts(model).measurement_batch  # the routing group
    assert any("densely" in note for note in result.notes)
    x = example_input(model, result.input_shape[1], seed=3)
    assert "forward" not in vars(model.blocks[1].mlp)  # the static form is gone afterwards
    assert np.abs(_ort_logits(result.path, x)[1] - model(x).logits.detach().numpy()).max() < 1e-4


def test_a_routing_frozen_by_the_tracer_is_refused_and_nothing_written(tmp_path):
    model, _ = load_export_model(model_name="test_modular")  # modules picked by .tolist()
    with pytest.raises(ValueError, match="Python list"):
        export_onnx(model, tmp_path / "m.onnx", exporter="torchscript")
    assert not (tmp_path / "m.onnx").exists()


def test_nir_stem_is_exported_and_attention_and_gates_are_refused(tmp_path, excite):
    nir = pytest.importorskip("nir")
    pytest.importorskip("nirtorch")
    from spikemoe.engine.export_nir import export_nir

    model, _ = load_export_model(model_name="test_spikformer_semm")
    excite(model)
    result = export_nir(model, tmp_path / "semm.nir")
    graph = nir.read(result.path)
    types = {type(n).__name__ for n in graph.nodes.values()}
    assert {"Input", "Conv2d", "LIF", "Output"} <= types
    assert "NIRGraph" in types  # the spike max-pools: SumPool2d + Threshold
    pools = [n for n in graph.nodes.values() if type(n).__name__ == "NIRGraph"]
    assert {type(n).__name__ for n in pools[0].nodes.values()} >= {"SumPool2d", "Threshold"}
    # Spikformer's stem residual S + LIF(BN(Conv(S))): two edges into the output
    assert sum(dst == "output" for _, dst in graph.edges) == 2
    # the rebuilt stem (BN folded into the convs) is the model's stem on an input that fires
    assert result.stem_check["differing"] == 0
    rows = {v.layer: v for v in result.table}
    assert rows["stem.stages.0"].status == "exported"
    assert rows["blocks.0.attn.kernel"].status == "refused"
    assert "Q K^T V" in rows["blocks.0.attn.kernel"].reason
    assert rows["blocks.0.attn.gate"].status == "refused"  # EMSA's spike mask
    assert "R (.) O" in rows["blocks.0.attn.gate"].reason
    assert rows["blocks.0.mlp.gate"].status == "refused"  # EMSP's G (.) Z2
    assert rows["blocks.0.mlp.fc1"].status == "expressible"
    report = json.loads(result.report.read_text())
    assert report["nir_file"] == "semm.nir"
    assert {r["layer"] for r in report["layers"]} == set(rows)


def test_nir_spike_driven_stops_at_the_membrane_max_pool(tmp_path):
    pytest.importorskip("nirtorch")
    from spikemoe.engine.export_nir import export_nir

    model, _ = load_export_model(model_name="test_spike_driven")
    rows = {v.layer: v for v in export_nir(model, tmp_path / "sd.nir").table}
    assert rows["stem.stages.3.pool"].status == "refused"
    assert "membrane" in rows["stem.stages.3.pool"].reason
    assert "SUM_n K (.) V" in rows["blocks.0.attn.kernel"].op


def test_nir_refuses_an_ann(tmp_path):
    pytest.importorskip("nirtorch")
    from spikemoe.engine.export_nir import export_nir

    model, _ = load_export_model(model_name="test_vit")
    with pytest.raises(ValueError, match="no spiking neuron"):
        export_nir(model, tmp_path / "vit.nir")


def test_missing_dependency_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    model, _ = load_export_model(model_name="test_vit")
    with pytest.raises(ExportDependencyError, match=r"spikemoe\[export\]") as e:
        export_onnx(model, tmp_path / "x.onnx")
    assert "onnxruntime" in str(e.value)
    code = main(["export", "--model", "test_vit", "--format", "onnx", "--out",
                 str(tmp_path / "x.onnx")])
    assert code == 2
    assert "spikemoe[export]" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_cli_exports_a_model_and_prints_the_difference(tmp_path, capsys):
    out = tmp_path / "vit.onnx"
    code = main(["export", "--model", "test_vit", "--format", "onnx", "--out", str(out),
                 "--exporter", "torchscript"])
    assert code == 0 and out.exists()
    text = capsys.readouterr().out
    assert "max |diff|" in text and "frames [2, 1, 2, 16, 16]" in text


def test_cli_needs_a_source_or_a_model(tmp_path, capsys):
    code = main(["export", "--format", "onnx", "--out", str(tmp_path / "x.onnx")])
    assert code == 2
    assert "--model NAME" in capsys.readouterr().err


def test_cli_exports_a_run_directory_to_nir(tmp_path, capsys):
    pytest.importorskip("nirtorch")
    from spikemoe.engine.checkpoint import save_checkpoint
    from spikemoe.engine.config import TrainConfig, config_to_dict
    from spikemoe.models import create_model

    cfg = TrainConfig()
    cfg.model.name, cfg.model.kwargs = "test_spikformer", {}
    cfg.data.T, cfg.data.size = 2, 16
    run = tmp_path / "run"
    save_checkpoint({"model": create_model("test_spikformer").state_dict(),
                     "config": config_to_dict(cfg), "step": 1}, run / "best.pt")
    out = tmp_path / "stem.nir"
    assert main(["export", str(run), "--format", "nir", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"test_spikformer from {run / 'best.pt'}" in text
    assert "blocks.0.attn.kernel" in text and "refused" in text
    assert out.exists() and json.loads(out.with_suffix(".json").read_text())["layers"]
