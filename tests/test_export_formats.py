"""`aether export format=torchscript|openvino|onnx quantize=int8|tensorrt`: each package loaded with
its own runtime, and the agreement JSON measured on the run's own test split.

One tiny classification run (test_convnext, 32 px, one epoch) for the module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from aether.errors import AetherError
from conftest import make_folder, run_in_process

INT8_MIN = 0.8  # the int8 threshold these tests ask for: 15 test images, a one-epoch model


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict]:
    root = tmp_path_factory.mktemp("export_formats")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AETHER_CACHE", str(root / "cache"))
        run = root / "run"
        run_in_process(run, [f"data={make_folder(root / 'imgs', per_class=16)}", "trainer.max_epochs=1",
                             "data.test_fraction=0.3", "+model.kwargs.depths=[1,1,1,1]"])  # 4 blocks, not 9
        yield {"root": root, "run": run}


def export(run: Path, *args: str) -> Dict:
    from aether.cli import export_run

    return export_run([f"run={run}", *args])[1]


def _test_images(run: Path) -> List[Path]:
    from aether.deploy.export_formats import run_splits

    classes = json.loads((run / "model" / "labels.json").read_text())
    return [Path(p) for p, _ in run_splits(run, classes)["test"]]


def _batch_and_reference(run: Path):  # type: ignore[no-untyped-def]
    import torch

    from aether.deploy.predictor import Predictor

    pred = Predictor(run / "model", device="cpu")
    x = torch.stack([pred.pre.load(str(p)) for p in _test_images(run)[:5]])
    with torch.inference_mode():
        return x, pred.model(x).numpy()


def _check_agreement(info: Dict, run: Path, minimum: float) -> None:
    n_test = json.loads((run / "metrics.json").read_text())["data"]["num_test"]
    assert info["split"] == "test" and info["images"] == n_test
    assert info["top1_agreement"] >= minimum and info["passed"] is True
    assert {"metric_pytorch", "metric_exported", "max_abs_diff", "min_agreement"} <= set(info)
    assert 0.0 <= info["metric_exported"] <= 1.0
    # the PyTorch accuracy over the rebuilt test split is the run's own test accuracy
    assert info["metric_pytorch"] == pytest.approx(json.loads((run / "metrics.json").read_text())["test"]["accuracy"],
                                                   abs=1e-6)


def test_onnx_fp32_json_has_the_agreement_and_metadata(trained: Dict) -> None:
    import onnx

    run = trained["run"]
    info = export(run, "format=onnx")
    _check_agreement(json.loads((run / "model" / "onnx.json").read_text()), run, 1.0)
    assert info["parity_max_abs_diff"] <= info["atol"] and info["batch_sizes"] == [1, 3]
    props = {p.key: p.value for p in onnx.load(str(run / "model" / "model.onnx")).metadata_props}
    assert json.loads(props["aether.preprocessing"])["input_size"] == [3, 32, 32]


def test_torchscript_package_runs_in_torch_jit_and_agrees(trained: Dict) -> None:
    import numpy as np
    import torch

    run = trained["run"]
    info = export(run, "format=torchscript")
    path = Path(info["path"])
    assert path.name == "model.torchscript.pt" and info["exporter"] == "torch.jit.trace"
    saved = json.loads((run / "model" / "torchscript.json").read_text())
    _check_agreement(saved, run, 1.0)
    assert saved["max_abs_diff"] <= 1e-4
    files = {"labels.json": "", "preprocessing.json": ""}
    loaded = torch.jit.load(str(path), map_location="cpu", _extra_files=files)
    assert json.loads(files["labels.json"]) == ["blue", "green", "red"]
    assert json.loads(files["preprocessing.json"])["input_size"] == [3, 32, 32]
    x, ref = _batch_and_reference(run)
    with torch.inference_mode():
        got = loaded(x).numpy()
    assert got.shape == (5, 3) and np.max(np.abs(got - ref)) <= 1e-4  # batch 5: not the traced batch size
    report = (run / "report.md").read_text()
    assert report.count("## Export: torchscript") == 1 and "top-1 agreement | 1.0000" in report
    from aether.deploy.export_formats import report_section

    report_section(run, "torchscript", {**saved, "top1_agreement": 0.5})  # again: replaced, not repeated
    report = (run / "report.md").read_text()
    assert report.count("## Export: torchscript") == 1 and "top-1 agreement | 0.5000" in report
    assert "## Export: onnx\n" in report  # the other exports' sections stay


def test_openvino_package_runs_in_openvino_and_agrees(trained: Dict) -> None:
    import numpy as np
    import openvino as ov

    run = trained["run"]
    info = export(run, "format=openvino")
    xml = Path(info["path"])
    assert xml == run / "model" / "openvino" / "model.xml" and (xml.parent / "model.bin").is_file()
    saved = json.loads((run / "model" / "openvino.json").read_text())
    _check_agreement(saved, run, 1.0)
    model = ov.Core().read_model(str(xml))
    assert json.loads(model.get_rt_info(["aether", "classes"]).astype(str)) == ["blue", "green", "red"]
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    x, ref = _batch_and_reference(run)
    got = compiled(x.numpy())[compiled.output(0)]
    assert got.shape == (5, 3) and np.max(np.abs(got - ref)) <= 1e-4
    # the exports are not part of the model: the BentoML version hash ignores them
    from aether.deploy.bento import model_version

    before = model_version(run / "model")
    (run / "model" / "openvino" / "model.bin").write_bytes(b"changed")
    assert model_version(run / "model") == before


def test_onnx_int8_is_static_qdq_calibrated_on_train_and_agrees(trained: Dict) -> None:
    import numpy as np
    import onnx
    import onnxruntime as ort

    run = trained["run"]
    info = export(run, "format=onnx", "quantize=int8", f"min_agreement={INT8_MIN}")
    path = Path(info["path"])
    assert path.name == "model-int8.onnx"
    saved = json.loads((run / "model" / "onnx-int8.json").read_text())
    _check_agreement(saved, run, INT8_MIN)
    num_train = json.loads((run / "metrics.json").read_text())["data"]["num_train"]
    assert saved["calibration"] == {"split": "train", "images": min(100, num_train), "method": "MinMax"}
    graph = onnx.load(str(path))
    ops = {n.op_type for n in graph.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ format
    props = {p.key: p.value for p in graph.metadata_props}
    assert json.loads(props["aether.classes"]) == ["blue", "green", "red"] and props["aether.quantize"] == "int8"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x, ref = _batch_and_reference(run)
    got = session.run(["logits"], {"images": x.numpy()})[0]
    assert got.shape == (5, 3) and np.mean(got.argmax(1) == ref.argmax(1)) >= 0.8
    assert path.stat().st_size < (run / "model" / "model.onnx").stat().st_size
    assert "## Export: onnx-int8" in (run / "report.md").read_text()


def test_openvino_int8_is_nncf_calibrated_on_train_and_agrees(trained: Dict) -> None:
    import numpy as np
    import openvino as ov

    run = trained["run"]
    info = export(run, "format=openvino", "quantize=int8", f"min_agreement={INT8_MIN}")
    xml = Path(info["path"])
    assert xml == run / "model" / "openvino-int8" / "model.xml"
    saved = json.loads((run / "model" / "openvino-int8.json").read_text())
    _check_agreement(saved, run, INT8_MIN)
    num_train = json.loads((run / "metrics.json").read_text())["data"]["num_train"]
    assert saved["calibration"] == {"split": "train", "images": min(100, num_train), "tool": "nncf"}
    model = ov.Core().read_model(str(xml))
    assert "FakeQuantize" in {op.get_type_name() for op in model.get_ops()}  # NNCF's int8 points
    compiled = ov.Core().compile_model(model, "CPU")
    x, ref = _batch_and_reference(run)
    got = compiled(x.numpy())[compiled.output(0)]
    assert got.shape == (5, 3) and np.mean(got.argmax(1) == ref.argmax(1)) >= 0.8
    assert "## Export: openvino-int8" in (run / "report.md").read_text()


def test_onnx_fp16_when_onnxconverter_common_is_installed(trained: Dict) -> None:
    pytest.importorskip("onnxconverter_common")
    import onnx

    run = trained["run"]
    info = export(run, "format=onnx", "quantize=fp16")
    _check_agreement(json.loads((run / "model" / "onnx-fp16.json").read_text()), run, 0.99)
    graph = onnx.load(info["path"])
    assert graph.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # float32 in, fp16 inside
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in graph.graph.initializer)


def test_clear_errors(trained: Dict) -> None:
    run = trained["run"]
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(AetherError, match="format=tensorrt needs an NVIDIA GPU with CUDA"):
            export(run, "format=tensorrt")
    with pytest.raises(AetherError, match="format=torchscript quantize=int8: not available"):
        export(run, "format=torchscript", "quantize=int8")
    with pytest.raises(AetherError, match="quantize='int4': expected int8 or fp16"):
        export(run, "format=onnx", "quantize=int4")
    with pytest.raises(AetherError, match="on_mismatch='maybe': expected fail or warn"):
        export(run, "format=onnx", "on_mismatch=maybe")
    with pytest.raises(AetherError, match="did you mean 'openvino'"):
        export(run, "format=openvnio")
    with pytest.raises(AetherError, match="quantize= applies to format=onnx"):
        export(run, "quantize=int8")
    import importlib.util

    if importlib.util.find_spec("onnxconverter_common") is None:
        with pytest.raises(AetherError, match="needs the onnxconverter_common package"):
            export(run, "format=onnx", "quantize=fp16")


def test_a_mismatch_fails_and_removes_the_export_or_warns(trained: Dict, tmp_path: Path) -> None:
    """The check catches a wrong exported model: a copy of the run whose model.onnx was replaced
    behind onnx.json's back (here: its head negated, so every prediction changes) is converted to
    OpenVINO as it is, and the agreement on the test split says so."""
    import shutil

    import numpy as np
    import onnx
    from onnx import numpy_helper

    if not (trained["run"] / "model" / "model.onnx").is_file():
        export(trained["run"], "format=onnx", "agreement=false")
    run = tmp_path / "run"
    shutil.copytree(trained["run"], run, ignore=shutil.ignore_patterns("checkpoints", "openvino*"))
    graph = onnx.load(str(run / "model" / "model.onnx"))
    for init in graph.graph.initializer:
        if list(init.dims)[:1] == [3] and len(init.dims) <= 2:  # the head's weight (3, C) and bias (3,)
            init.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(init), init.name))
    onnx.save(graph, str(run / "model" / "model.onnx"))
    with pytest.raises(AetherError, match=r"agrees with PyTorch on 0\.00% of the 15 test images.*was not kept"):
        export(run, "format=openvino")
    saved = json.loads((run / "model" / "openvino.json").read_text())
    assert saved["passed"] is False and saved["kept"] is False and saved["top1_agreement"] == 0.0
    assert not (run / "model" / "openvino").exists()
    assert "failed, not kept" in (run / "report.md").read_text()
    info = export(run, "format=openvino", "on_mismatch=warn")
    assert info["passed"] is False and "below min_agreement" in info["warning"]
    assert (run / "model" / "openvino" / "model.xml").is_file()
    assert np.isclose(info["metric_exported"], 0.0)


def test_benchmark_measures_each_format_and_recommends_one(trained: Dict) -> None:
    """`aether benchmark`: every format asked for is exported, loaded with its own runtime, timed
    and scored on the test split; what cannot run here (TensorRT without CUDA) says why."""
    from aether.deploy.benchmark import benchmark_run

    run = trained["run"]
    res = benchmark_run(str(run), formats=["pytorch", "onnx", "torchscript", "tensorrt"], batch_sizes=(1, 4),
                        iters=3, seconds=0.05)
    rows = {r["format"]: r for r in res["rows"]}
    assert list(rows) == ["pytorch", "onnx", "torchscript", "tensorrt"]
    assert rows["tensorrt"]["available"] is False and "CUDA" in rows["tensorrt"]["reason"]
    accuracy = json.loads((run / "metrics.json").read_text())["test"]["accuracy"]
    for name in ("pytorch", "onnx", "torchscript"):
        r = rows[name]
        assert r["bytes"] > 0 and r["load_s"] > 0 and 0 < r["latency_ms_p50"] <= r["latency_ms_p99"]
        assert r["throughput_ips"] > 0 and r["best_batch"] in (1, 4)
        assert r["accuracy"] == pytest.approx(accuracy)  # the same test split the run was scored on
    assert res["recommendation"]["format"] in ("pytorch", "onnx", "torchscript")
    assert json.loads((run / "benchmark.json").read_text())["rows"][0]["format"] == "pytorch"
    assert (run / "benchmark.png").stat().st_size > 0
