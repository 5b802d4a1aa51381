"""`aether export format=onnx|torchscript|openvino [quantize=int8]` and `aether benchmark` for
multilabel, segmentation and detection: each task trains tiny on drawn shapes (one epoch), every
format is exported, loaded with its own runtime and checked against PyTorch on the run's own test
split, as each task's codec measures it (label decisions / pixels / boxes; mAP / mIoU / mAP@.5)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

from tests.conftest import run_cli, run_in_process
from tests.tasks_data import make_scenes, write_detection, write_masks, write_multilabel

TINY = ["model.pretrained=false", "trainer.max_epochs=1", "data.batch_size=8", "scheduler=none", "data/augment=none",
        "+model.kwargs.depths=[1,1,1,1]"]
OVERRIDES = {
    "multilabel": lambda root: [f"data={write_multilabel(root / 'data', n=24)}", "data.test_fraction=0.3"],
    "segmentation": lambda root: [f"data={write_masks(root / 'data', n=16, size=32)}", "data.test_fraction=0.3"],
    # score_threshold 0: the barely trained detector still answers boxes (its 10 best an image)
    "detection": lambda root: [f"data={write_detection(root / 'data', 'coco', make_scenes(16, size=64, seed=5))}",
                               "data.image_size=64", "data.test_fraction=0.3", "+task_options.score_threshold=0.0",
                               "+task_options.detections_per_image=10"],
}
METRIC = {"multilabel": "map", "segmentation": "miou", "detection": "map_50"}
KEYS = {"top1_agreement", "metric", "metric_pytorch", "metric_exported", "max_abs_diff", "split", "images", "passed"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[str, Path]]:
    root = tmp_path_factory.mktemp("export_tasks")
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AETHER_CACHE", str(root / "cache"))
        for task, overrides in OVERRIDES.items():
            out[task] = root / task / "run"
            assert run_in_process(out[task], [*TINY, *overrides(root / task)]).task == task
        yield out


def export(run: Path, *args: str) -> Dict[str, Any]:
    from aether.cli import export_run

    return export_run([f"run={run}", *args])[1]


def _test_batch(run: Path) -> Any:
    """Up to 4 test images as the task's codec reads them, and the PyTorch model's served output."""
    import torch

    from aether.deploy.export_formats import _batches, run_splits
    from aether.deploy.tasks import TaskPredictor

    pred = TaskPredictor(run / "model", device="cpu")
    x, _ = next(_batches(pred.codec, run_splits(run, pred.classes)["test"][:4]))
    with torch.inference_mode():
        return pred, x, pred.codec.forward(pred.model, x)


def _runtime(fmt: str, path: Path) -> Any:
    """The exported file loaded with its own runtime: numpy batch -> the graph's output."""
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: session.run(["logits"], {"images": x})[0]
    if fmt == "torchscript":
        import torch

        loaded = torch.jit.load(str(path), map_location="cpu")

        def run(x: Any) -> Any:
            with torch.inference_mode():
                return loaded(torch.from_numpy(x)).numpy()
        return run
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return lambda x: compiled(x)[compiled.output(0)]


def _same_served(task: str, ref: Any, got: Any) -> None:
    import numpy as np

    assert got.shape == ref.shape
    if task == "multilabel":  # sigmoid scores
        assert np.max(np.abs(got - ref)) < 1e-4
    elif task == "segmentation":  # class-id masks: only a near-tie between two logits could flip a pixel
        assert (got == ref).mean() > 0.99
    else:  # boxes [x0, y0, x1, y1, score, label] after the same NMS, in the same order
        assert np.array_equal(got[..., 5], ref[..., 5]) and np.max(np.abs(got[..., :5] - ref[..., :5])) < 1e-3


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "openvino"])
@pytest.mark.parametrize("task", ["multilabel", "segmentation", "detection"])
def test_export_agrees_on_the_test_split(runs: Dict[str, Path], task: str, fmt: str) -> None:
    run = runs[task]
    info = export(run, f"format={fmt}")
    saved = json.loads((run / "model" / f"{fmt}.json").read_text())
    assert KEYS <= set(saved) and saved["passed"] is True and saved["task"] == task
    metrics = json.loads((run / "metrics.json").read_text())
    assert saved["split"] == "test" and saved["images"] == metrics["data"]["num_test"]
    assert saved["top1_agreement"] >= 0.99 and saved["metric"] == METRIC[task]
    # PyTorch's metric over the rebuilt test split is the run's own test metric
    assert saved["metric_pytorch"] == pytest.approx(metrics["test"][METRIC[task]], abs=1e-4)
    assert 0.0 <= saved["metric_exported"] <= 1.0
    if task == "detection":  # agreement over real boxes: 10 an image
        assert saved["boxes_pytorch"] == 10 * saved["images"]
    # the file alone, in its own runtime, answers what PyTorch serves once the codec finishes it
    pred, x, ref = _test_batch(run)
    got = pred.codec.onnx_outputs(_runtime(fmt, Path(info["path"])), x.numpy(), pred.codec.options)
    _same_served(task, ref, got)
    assert f"## Export: {fmt}" in (run / "report.md").read_text()


@pytest.mark.parametrize("task", ["multilabel", "segmentation", "detection"])
def test_onnx_int8_is_calibrated_and_agrees(runs: Dict[str, Path], task: str) -> None:
    import onnx

    run = runs[task]
    info = export(run, "format=onnx", "quantize=int8", "min_agreement=0.8")
    saved = json.loads((run / "model" / "onnx-int8.json").read_text())
    assert KEYS <= set(saved) and saved["passed"] is True and saved["top1_agreement"] >= 0.8
    assert saved["metric"] == METRIC[task] and saved["calibration"]["split"] == "train"
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in onnx.load(info["path"]).graph.node}


@pytest.mark.parametrize("task", ["multilabel", "segmentation", "detection"])
def test_openvino_int8_is_calibrated_and_agrees(runs: Dict[str, Path], task: str) -> None:
    """NNCF (format=openvino quantize=int8); for detection on the candidates, so boxes still match."""
    run = runs[task]
    export(run, "format=openvino", "quantize=int8", "min_agreement=0.8")
    saved = json.loads((run / "model" / "openvino-int8.json").read_text())
    assert saved["passed"] is True and saved["top1_agreement"] >= 0.8 and saved["metric"] == METRIC[task]
    assert saved["calibration"]["tool"] == "nncf" and saved["calibration"]["split"] == "train"


def test_benchmark_of_a_detection_run(runs: Dict[str, Path]) -> None:
    from aether.deploy.benchmark import benchmark_run

    run = runs["detection"]
    res = benchmark_run(str(run), formats=["pytorch", "onnx"], batch_sizes=(1, 2), iters=2, seconds=0.05)
    saved = json.loads((run / "benchmark.json").read_text())
    assert [r["format"] for r in saved["rows"]] == ["pytorch", "onnx"]
    map50 = json.loads((run / "metrics.json").read_text())["test"]["map_50"]
    for r in res["rows"]:
        assert r["available"] and r["metric"] == "map_50" and r["map_50"] == pytest.approx(map50, abs=1e-4)
        assert 0 < r["latency_ms_p50"] <= r["latency_ms_p99"] and r["throughput_ips"] > 0
    assert res["recommendation"]["format"] in ("pytorch", "onnx")


def test_detection_serves_with_the_onnx_and_openvino_backends(runs: Dict[str, Path], tmp_path: Path) -> None:
    """`aether export run=RUN backend=onnx`: the bento serves model.onnx; its runner (and
    backend=openvino's), with the bento's own options, answers the boxes PyTorch answers."""
    import numpy as np

    from aether.deploy.onnx_export import OnnxRunner

    run = runs["detection"]
    res = run_cli(["export", f"run={run}", "backend=onnx"], cwd=tmp_path,
                  env={"BENTOML_HOME": str(tmp_path / "bentoml"), "AETHER_CACHE": str(tmp_path / "cache")})
    assert res.returncode == 0, res.stderr
    settings = json.loads((run / "bento" / "aether_serve.json").read_text())
    assert settings["backend"] == "onnx" and settings["task"] == "detection"
    pred, x, ref = _test_batch(run)
    got = OnnxRunner(run / "model" / "model.onnx", task="detection", options=settings["task_options"]).outputs(
        x.numpy())
    _same_served("detection", ref, got)
    assert np.all(got[..., 4][got[..., 4] >= 0] >= settings["task_options"]["min_score"])
    # backend=openvino's runner: the same codec after the OpenVINO IR
    from aether.deploy.openvino_runner import OpenVinoRunner

    if not (run / "model" / "openvino" / "model.xml").is_file():
        export(run, "format=openvino")
    got = OpenVinoRunner(run / "model" / "openvino" / "model.xml", task="detection",
                         options=settings["task_options"]).outputs(x.numpy())
    _same_served("detection", ref, got)


@pytest.mark.parametrize("head", ["fcos", "retinanet"])
def test_exported_candidates_finish_as_torchvision_does(runs: Dict[str, Path], head: str) -> None:
    """Candidates (the network up to its fixed-size outputs) + finish_candidates (score filter,
    per-level top-k, NMS) - what the codec's PyTorch `forward` and every exported format run - =
    the torchvision detector's own answer (its built-in post-processing, as the run's test mAP was
    computed), for both one-stage heads (here untrained, on the detection run's layout); a Faster
    R-CNN is refused by name and served by torchvision's own post-processing."""
    import numpy as np
    import torch

    from aether.errors import AetherError
    from aether.models.encoder_net import rebuild_encoder_net
    from aether.tasks.detection.serving import DetectionCodec, finish_candidates, padded

    model_dir = runs["detection"] / "model"
    info = json.loads((model_dir / "model.json").read_text())
    pre = json.loads((model_dir / "preprocessing.json").read_text())
    info["task_options"] = {**info["task_options"], "head": head, "nms_threshold": 0.5, "detections_per_image": 50}
    torch.manual_seed(0)
    net = rebuild_encoder_net(info, 2, pre).eval()
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    options = DetectionCodec.serve_options(model_dir, info["task_options"], ["circle", "square"], {})
    codec = DetectionCodec(_test_batch(runs["detection"])[0].pre, options)
    with torch.inference_mode():
        ref = padded(net(list(x)), options["detections"])  # torchvision's own post-processing
        got = finish_candidates(DetectionCodec.export_module(net)(x).numpy(), options["min_score"],
                                options["nms_threshold"], options["detections"])
        served = codec.forward(net, x)
    assert (ref[..., 4] >= 0).sum() > 30  # boxes to compare
    assert np.array_equal(got[..., 5], ref[..., 5]) and np.max(np.abs(got[..., :5] - ref[..., :5])) < 1e-5
    assert np.array_equal(served, got)  # PyTorch serving: the same code
    info["task_options"]["head"] = "faster_rcnn"
    rcnn = rebuild_encoder_net(info, 2, pre).eval()
    with pytest.raises(AetherError, match="head=faster_rcnn: not exportable"):
        DetectionCodec.export_module(rcnn)
    with torch.inference_mode():  # still served, by torchvision's post-processing
        assert codec.forward(rcnn, x).shape == (3, options["detections"], 6)


def test_benchmark_cli_of_a_segmentation_run(runs: Dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    """`aether benchmark run=RUN` (the command, in process) on a segmentation run: every format
    asked for is timed and scored by the run's own test mIoU; RUN/benchmark.json has its rows."""
    from aether.cli import cmd_benchmark

    run = runs["segmentation"]
    assert cmd_benchmark([f"run={run}", "formats=pytorch,onnx", "batch_sizes=1,2", "iters=2"]) == 0
    assert "miou" in capsys.readouterr().out  # the table's metric column is the task's
    saved = json.loads((run / "benchmark.json").read_text())
    miou = json.loads((run / "metrics.json").read_text())["test"]["miou"]
    assert [r["format"] for r in saved["rows"]] == ["pytorch", "onnx"]
    for r in saved["rows"]:
        assert r["available"] and r["metric"] == "miou" and r["miou"] == pytest.approx(miou, abs=1e-3)
        assert r["bytes"] > 0 and 0 < r["latency_ms_p50"] <= r["latency_ms_p99"] and r["throughput_ips"] > 0
    assert saved["rows"][1]["top1_agreement"] >= 0.99 and saved["recommendation"]["format"]
    assert (run / "benchmark.png").stat().st_size > 0
