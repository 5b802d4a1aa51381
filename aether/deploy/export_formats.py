"""`aether export run=RUN format=onnx|openvino|torchscript|tensorrt [quantize=int8|fp16]`: the
run's network in another runtime's format, measured on the run's own test split.

Every export is a package beside the weights in RUN/model/ that carries its label map and
preprocessing (ONNX metadata_props, TorchScript extra files, OpenVINO rt_info; and the JSON
beside it for every format):

    format=onnx                   model.onnx            onnx.json
    format=onnx quantize=int8     model-int8.onnx       onnx-int8.json   (static QDQ, calibrated)
    format=onnx quantize=fp16     model-fp16.onnx       onnx-fp16.json   (onnxconverter-common)
    format=torchscript            model.torchscript.pt  torchscript.json (torch.jit.trace; else
                                  model.pt2, a torch.export program)
    format=openvino               openvino/model.xml+bin  openvino.json  (from model.onnx)
    format=tensorrt [fp16]        model[-fp16].engine   tensorrt[-fp16].json (CUDA + tensorrt only)

What is exported is the task codec's `export_module` (aether.tasks.codec.Codec): the network
itself, or (detection) the network up to its fixed-size outputs, which the codec finishes after
any runtime. INT8 calibration reads `calibration_images` (100) images of the run's own training
split through the model's evaluation transform. The agreement check then runs the exported file
with its own runtime (onnxruntime, torch.jit, OpenVINO, TensorRT) and the PyTorch model over every
image of the run's test split - the same split, rebuilt from the run's config.yaml and data, with
its targets - and records in the JSON what the task's codec measures (`Codec.agreement`):

    task            top1_agreement: the fraction of ...        metric (each model's)
    classification  images with the same top class             accuracy
    multilabel      (image, label) decisions at the served     map
                    thresholds that are the same
    segmentation    pixels with the same class                 miou
    detection       boxes matched (same class, IoU >= 0.9)     map_50

and the largest |difference| of the exported outputs (max_abs_diff). Below `min_agreement`
(0.99; 0.95 for int8) the export fails (`on_mismatch=fail`: the exported file is removed, the
JSON is kept with "passed": false) or warns (`on_mismatch=warn`: both are kept). The result is
appended to the run's report.md (and report.html) when it has one.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from aether.errors import AetherError

log = logging.getLogger("aether")

FORMATS = ("onnx", "torchscript", "openvino", "tensorrt")
QUANTIZE = ("int8", "fp16")
# which quantize= each format has (the rest get a clear error)
QUANTIZE_OF = {"onnx": ("int8", "fp16"), "torchscript": (), "openvino": ("int8",), "tensorrt": ("fp16",)}
MIN_AGREEMENT = {None: 0.99, "fp16": 0.99, "int8": 0.95}
CALIBRATION_IMAGES = 100
BATCH = 32
Runner = Callable[[Any], Any]  # (N, 3, H, W) float32 numpy -> the exported graph's numpy output ("logits")
Calibration = Callable[[], List[Any]]  # -> INT8 calibration batches (numpy) from the training split


def export_package(run: str, fmt: str, quantize: Optional[str] = None, min_agreement: Optional[float] = None,
                   on_mismatch: str = "fail", agreement: bool = True,
                   calibration_images: int = CALIBRATION_IMAGES) -> Dict[str, Any]:
    """Export run=`run` as `fmt` (optionally quantized), check agreement on its test split; returns
    the JSON written beside the exported file (also with "json": its path)."""
    from aether.deploy.model_dir import check_run
    from aether.tasks.codec import codec_class, model_task

    if fmt not in FORMATS:
        from aether.suggest import did_you_mean

        raise AetherError(f"export: format={fmt!r}: expected bento, {', '.join(FORMATS[:-1])} or {FORMATS[-1]}"
                          f"{did_you_mean(fmt, ['bento', *FORMATS])}")
    if quantize is not None and quantize not in QUANTIZE:
        raise AetherError(f"export: quantize={quantize!r}: expected int8 or fp16 (or leave it out for float32)")
    if on_mismatch not in ("fail", "warn"):
        raise AetherError(f"export: on_mismatch={on_mismatch!r}: expected fail or warn")
    if min_agreement is not None and not 0.0 <= min_agreement <= 1.0:
        raise AetherError(f"export: min_agreement={min_agreement!r}: expected a fraction between 0 and 1")
    if quantize is not None and quantize not in QUANTIZE_OF[fmt]:
        has = QUANTIZE_OF[fmt]
        raise AetherError(f"export: format={fmt} quantize={quantize}: not available"
                          + (f" (format={fmt} has quantize={' or '.join(has)})" if has else
                             f" (format={fmt} exports float32 only)")
                          + ("; INT8: format=onnx quantize=int8" if quantize == "int8" else ""))
    if fmt == "tensorrt":
        tensorrt_ready()
    if fmt == "openvino":
        _need("openvino", "format=openvino", "pip install 'aether[openvino]'")
    if fmt == "openvino" and quantize == "int8":
        _need("nncf", "format=openvino quantize=int8",
              "pip install nncf; or export format=onnx quantize=int8 (onnxruntime's static INT8)")
    if fmt == "onnx" and quantize == "fp16":
        _need("onnxconverter_common", "format=onnx quantize=fp16", "pip install onnxconverter-common")

    run_dir = check_run(run)
    model_dir = run_dir / "model"
    task = model_task(json.loads((model_dir / "model.json").read_text()))
    packaged = codec_class(task).packages  # which tasks: their codec says (aether.tasks.codec)
    if not packaged and fmt == "onnx" and quantize is None:  # as before: parity-checked model.onnx
        from aether.deploy.onnx_export import export_onnx

        return {**export_onnx(run), "json": str(model_dir / "onnx.json")}
    if not packaged:
        raise AetherError(f"export format={fmt}{' quantize=' + quantize if quantize else ''}: not yet for "
                          f"task={task} (run={run}); format=onnx without quantize= exports it")
    from aether.deploy.predictor import Predictor
    from aether.deploy.tasks import make_codec, serve_options

    pred = Predictor(model_dir, device="cpu")
    model = pred.model
    if hasattr(model, "merge_and_unload"):  # a LoRA adapter kept separate: export the merged network
        model = model.merge_and_unload()
    model.eval()
    codec = make_codec(pred.pre, serve_options(model_dir))
    net = codec.export_module(model)
    splits = run_splits(run_dir, pred.classes) if agreement or quantize == "int8" else None
    name = fmt + (f"-{quantize}" if quantize else "")
    info_path = model_dir / f"{name}.json"

    def calibration() -> List[Any]:
        assert splits is not None
        return calibration_batches(codec, splits["train"], calibration_images)

    t0 = time.perf_counter()
    artifact, runner, info = _EXPORTERS[fmt](run, model_dir, net, pred, quantize, calibration)
    info = {"format": fmt, "quantize": quantize, "path": str(artifact), "task": task, "classes": pred.classes,
            "preprocessing": pred.pre.preprocessing, **info, "export_s": round(time.perf_counter() - t0, 3),
            "bytes": _size(artifact)}
    if fmt == "onnx" and quantize is None and info_path.is_file():  # export_onnx's own record (parity, opset)
        parity = json.loads(info_path.read_text())
        parity["parity_max_abs_diff"] = parity.get("max_abs_diff")  # seeded random inputs, batch 1 and 3
        info = {**parity, **info}
    if not agreement:
        info["agreement"] = "not measured (agreement=false)"
        info_path.write_text(json.dumps(info, indent=2))
        return {**info, "json": str(info_path)}
    assert splits is not None
    threshold = MIN_AGREEMENT[quantize] if min_agreement is None else float(min_agreement)
    measured = measure_agreement(model, codec, runner, _batches(codec, splits["test"]), pred.info)
    passed = measured["top1_agreement"] >= threshold
    info.update(measured, min_agreement=threshold, on_mismatch=on_mismatch, passed=passed)
    if not passed and on_mismatch == "fail":
        _remove(artifact)
        info["kept"] = False
    info_path.write_text(json.dumps(info, indent=2))
    report_section(run_dir, name, info)
    if not passed:
        msg = (f"export format={fmt}{' quantize=' + quantize if quantize else ''}: the exported model agrees with "
               f"PyTorch on {measured['top1_agreement']:.2%} of the {measured['images']} test images of {run_dir} "
               f"({measured['agreement_of']}), below min_agreement={threshold:g}; {measured['metric']} PyTorch "
               f"{measured['metric_pytorch']:.4f}, exported {measured['metric_exported']:.4f}, max |d output| "
               f"{measured['max_abs_diff']:.3g} ({info_path})")
        if on_mismatch == "fail":
            raise AetherError(msg + f"; {_shown(artifact)} was not kept (on_mismatch=warn keeps it, or lower "
                              "min_agreement=)")
        info["warning"] = msg
        info_path.write_text(json.dumps(info, indent=2))
    return {**info, "json": str(info_path)}


# --- the run's own data ------------------------------------------------------------------------

def run_splits(run_dir: Path, classes: List[str]) -> Dict[str, List[Tuple[str, Any]]]:
    """The run's train and test splits as [(path, target)], rebuilt exactly as training built them:
    its config.yaml (checked like any config from others), the dataset doctor, the seeded split.
    The target is the one the run's data index holds: a class index (a classifier's samples), else
    the item's own (multi-hot list, mask path, boxes and labels), which the task's codec reads
    (`Codec.example`)."""
    from omegaconf import OmegaConf

    from aether.config.trust import check_resumed
    from aether.config.validate import validate
    from aether.tasks.base import resolve_task

    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise AetherError(f"run={run_dir}: no config.yaml, so its test split cannot be rebuilt for the agreement "
                          "check; agreement=false exports without it")
    raw = OmegaConf.to_container(OmegaConf.load(cfg_path), resolve=True)
    if not isinstance(raw, dict):
        raise AetherError(f"{cfg_path}: expected a mapping")
    check_resumed(str(cfg_path), raw)
    raw.pop("resume", None)
    rc = validate(raw)
    where = rc.data.path or "(the embedded sample)"
    try:
        bundle = resolve_task(rc).build_data(rc)
    except AetherError as exc:
        raise AetherError(f"run={run_dir}: its data (data.path={where}) cannot be read again for the agreement "
                          f"check on its test split: {exc}; agreement=false exports without it") from None
    if list(bundle.classes) != list(classes):
        raise AetherError(f"run={run_dir}: data.path={where} now has classes {bundle.classes}, the model was "
                          f"trained on {classes}: the data changed since training, so its test split is not the "
                          "run's; agreement=false exports without the check")
    return {name: [(str(s.path), s.target if hasattr(s, "target") else int(s.label)) for s in bundle.splits[name]]
            for name in ("train", "test")}


def _batches(codec: Any, items: List[Tuple[str, Any]], size: int = BATCH) -> Any:
    """(N, 3, H, W) float32 tensors + their targets, `size` at a time, as the task's codec reads a
    test item (`Codec.example`: the evaluation transform); unusable files are skipped (the doctor
    already left them out of training)."""
    import torch

    from aether.deploy.predictor import BadImage

    for start in range(0, len(items), size):
        xs, ys = [], []
        for path, target in items[start:start + size]:
            try:
                x, y = codec.example(path, target)
            except (BadImage, RuntimeError) as bad:  # the tasks' Datasets raise RuntimeError naming the file
                log.warning("agreement: skipping %s: %s", path, bad)
                continue
            xs.append(x)
            ys.append(y)
        if xs:
            yield torch.stack(xs).float(), ys


def calibration_batches(codec: Any, train: List[Tuple[str, Any]], n: int) -> List[Any]:
    """About `n` training images (every k-th of the split, so each class is represented), as numpy
    batches for INT8 calibration."""
    if not train:
        raise AetherError("INT8 calibration: the run's training split is empty")
    step = max(1, len(train) // max(1, n))
    picked = train[::step][:n]
    return [x.numpy() for x, _ in _batches(codec, picked, 16)]


def measure_agreement(model: Any, codec: Any, runner: Runner, batches: Any, info: Dict[str, Any]) -> Dict[str, Any]:
    """Run PyTorch and the exported model over the test `batches` (`_batches`): what the task's
    codec measures (`Codec.agreement`: the agreement and each model's test metric, on what each
    serves - PyTorch through `forward`, the exported graph through `onnx_outputs`) and the largest
    |difference| of the graph's outputs against `export_module`'s in PyTorch. `info`: model.json."""
    import numpy as np
    import torch

    net = codec.export_module(model)
    meter = codec.agreement(info.get("task_options") or {})
    n, worst = 0, 0.0
    for x, ys in batches:
        xn = x.numpy()
        with torch.inference_mode():
            ref_raw = net(x).float().numpy()
            ref = codec.forward(model, x)
        got_raw = np.asarray(runner(xn), dtype=np.float32)
        if got_raw.shape != ref_raw.shape:
            raise AetherError(f"the exported model returned shape {tuple(got_raw.shape)} for a batch of {len(ys)}; "
                              f"PyTorch {tuple(ref_raw.shape)}")
        worst = max(worst, float(np.max(np.abs(got_raw - ref_raw))))

        def exported(b: Any, xn: Any = xn, got_raw: Any = got_raw) -> Any:  # this batch: already run
            return got_raw if b.shape == xn.shape and np.array_equal(b, xn) else runner(b)

        meter.update(ref, codec.onnx_outputs(exported, xn, codec.options), ys)
        n += len(ys)
    if n == 0:
        raise AetherError("the agreement check found no usable image in the run's test split")
    return {"split": "test", "images": n, **meter.result(), "max_abs_diff": worst}


# --- the formats -------------------------------------------------------------------------------

def _onnx_fp32(run: str, model_dir: Path) -> Path:
    """model.onnx (parity-checked by export_onnx): reused when onnx.json says it is of these
    weights, else exported again."""
    from aether.deploy.onnx_export import export_onnx, weights_digest

    path, record = model_dir / "model.onnx", model_dir / "onnx.json"
    try:
        fresh = path.is_file() and json.loads(record.read_text()).get("weights_sha256") == weights_digest(model_dir)
    except (OSError, ValueError):
        fresh = False
    if not fresh:
        export_onnx(run)
    return path


def _ort_runner(path: Path) -> Runner:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return lambda x: session.run(["logits"], {"images": x})[0]


def _task(pred: Any) -> str:
    """The exported model's task, as its model.json names it (aether.tasks.codec.model_task)."""
    from aether.tasks.codec import model_task

    return model_task(pred.info)


def set_onnx_metadata(path: Path, classes: List[str], pre: Dict[str, Any], extra: Optional[Dict[str, str]] = None
                      ) -> None:
    """The label map and preprocessing inside the .onnx file (metadata_props; no effect on compute)."""
    import onnx

    m = onnx.load(str(path))
    props = {p.key: p.value for p in m.metadata_props}
    props.update({"aether.classes": json.dumps(classes), "aether.preprocessing": json.dumps(pre), **(extra or {})})
    onnx.helper.set_model_props(m, props)
    onnx.save(m, str(path))


def export_onnx_format(run: str, model_dir: Path, model: Any, pred: Any, quantize: Optional[str],
                       calibration: Calibration) -> Tuple[Path, Runner, Dict[str, Any]]:
    classes, pre = pred.classes, pred.pre.preprocessing
    if quantize is None:  # a fresh, parity-checked model.onnx (export_onnx), as format=onnx always made
        from aether.deploy.onnx_export import export_onnx

        src = Path(export_onnx(run)["path"])
        set_onnx_metadata(src, classes, pre, {"aether.task": _task(pred)})
        return src, _ort_runner(src), {}
    src = _onnx_fp32(run, model_dir)
    out = model_dir / f"model-{quantize}.onnx"
    tmp = out.with_suffix(".onnx.tmp")
    if quantize == "fp16":
        import onnx
        from onnxconverter_common import float16

        with warnings.catch_warnings():  # "the float32 number ... will be truncated to 1e-07", per weight
            warnings.simplefilter("ignore")
            m16 = float16.convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)  # float32 in and out
        onnx.save(m16, str(tmp))
        extra: Dict[str, Any] = {"converter": "onnxconverter_common.float16 (keep_io_types)"}
    else:
        from aether.tasks.codec import codec_class

        extra = quantize_onnx_int8(src, tmp, calibration(), codec_class(_task(pred)).int8_op_types)
    tmp.replace(out)
    set_onnx_metadata(out, classes, pre, {"aether.task": _task(pred), "aether.quantize": quantize})
    return out, _ort_runner(out), extra


def quantize_onnx_int8(src: Path, out: Path, batches: List[Any], op_types: Sequence[str] = ()) -> Dict[str, Any]:
    """onnxruntime's static INT8 quantization (QDQ, int8 weights and activations, MinMax ranges
    from `batches`: the calibration images) of the `op_types` nodes (empty: every kind
    onnxruntime quantizes)."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, \
        quantize_static

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self) -> Optional[Dict[str, Any]]:
            x = next(self._it, None)
            return None if x is None else {"images": x}

    pre = out.with_name(out.name + ".pre.onnx")
    source = src
    try:  # shape inference + graph optimisation first, as onnxruntime recommends; optional
        from onnxruntime.quantization.shape_inference import quant_pre_process

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        source = pre
    except Exception as exc:  # the plain graph quantizes too
        log.info("quantize: pre-processing skipped (%s: %s)", type(exc).__name__, exc)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # onnxruntime's per-tensor notes ("Axis 1 is out-of-range for weight ...")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_static(str(source), str(out), Reader(), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                            calibrate_method=CalibrationMethod.MinMax,
                            op_types_to_quantize=list(op_types) or None)
    except Exception as exc:
        out.unlink(missing_ok=True)
        raise AetherError(f"INT8 quantization of {src} failed: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    finally:
        root.setLevel(level)
        pre.unlink(missing_ok=True)
    images = sum(len(b) for b in batches)
    return {"calibration": {"split": "train", "images": images, "method": "MinMax"},
            "quant_format": "QDQ", "weights": "int8 per channel", "activations": "int8",
            "quantized_ops": list(op_types) or "all onnxruntime quantizes"}


def load_torchscript(path: Path) -> Any:
    """A model.torchscript.pt (torch.jit) or model.pt2 (torch.export) this export wrote, on the CPU.
    torch 2.14 calls torch.jit deprecated on every load: the warning says nothing about the file."""
    import torch

    if path.suffix != ".pt":
        return torch.export.load(str(path)).module()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.load. is deprecated", category=FutureWarning)
        return torch.jit.load(str(path), map_location="cpu")


def export_torchscript(run: str, model_dir: Path, model: Any, pred: Any, quantize: Optional[str],
                       calibration: Calibration) -> Tuple[Path, Runner, Dict[str, Any]]:
    """torch.jit.trace (checked on a second batch size); a network trace cannot follow is saved
    as a torch.export program (model.pt2) instead. Labels and preprocessing ride as extra files."""
    import torch

    shape = tuple(pred.pre.preprocessing["input_size"])
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(2, *shape, generator=gen)
    files = {name: (model_dir / name).read_text() for name in ("labels.json", "preprocessing.json", "model.json")}
    out = model_dir / "model.torchscript.pt"
    for stale in (out, model_dir / "model.pt2"):
        stale.unlink(missing_ok=True)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model, example, check_inputs=[(torch.randn(3, *shape, generator=gen),)])
            torch.jit.save(traced, str(out), _extra_files=files)
        loaded = load_torchscript(out)
        how = "torch.jit.trace"
    except Exception as exc:
        out.unlink(missing_ok=True)
        log.info("torchscript: trace failed (%s: %s); saving a torch.export program", type(exc).__name__, exc)
        out = model_dir / "model.pt2"
        batch = torch.export.Dim("batch", min=1, max=4096)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
                torch.export.save(program, str(out), extra_files=files)
            loaded = load_torchscript(out)
        except Exception as exc2:
            out.unlink(missing_ok=True)
            raise AetherError(f"TorchScript export of {pred.info.get('name')} failed: torch.jit.trace: "
                              f"{type(exc).__name__}: {exc}; torch.export: {type(exc2).__name__}: {exc2}") from None
        how = "torch.export"

    def runner(x: Any) -> Any:
        with torch.inference_mode():
            return loaded(torch.from_numpy(x)).float().numpy()

    return out, runner, {"exporter": how, "extra_files": sorted(files), "versions": {"torch": torch.__version__}}


def export_openvino(run: str, model_dir: Path, model: Any, pred: Any, quantize: Optional[str],
                    calibration: Calibration) -> Tuple[Path, Runner, Dict[str, Any]]:
    """OpenVINO IR (model.xml + model.bin, float32 weights) converted from the parity-checked
    model.onnx; classes and preprocessing in its rt_info. quantize=int8: NNCF's post-training
    quantization calibrated on the training split."""
    import shutil

    import openvino as ov

    src = _onnx_fp32(run, model_dir)
    folder = model_dir / ("openvino" + (f"-{quantize}" if quantize else ""))
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    extra: Dict[str, Any] = {"versions": {"openvino": ov.__version__}, "source": src.name}
    try:
        ov_model = ov.convert_model(str(src))
        if quantize == "int8":
            os.environ.setdefault("NNCF_CI", "1")  # NNCF's only telemetry off switch (aether.cli.no_vendor_telemetry)
            # NNCF imports torch's C++-extension helper, which warns "No CUDA runtime is found" on a CPU box
            logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
            import nncf

            batches = calibration()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ov_model = nncf.quantize(ov_model, nncf.Dataset(batches), subset_size=len(batches))
            extra.update(calibration={"split": "train", "images": sum(len(b) for b in batches), "tool": "nncf"},
                         versions={**extra["versions"], "nncf": nncf.__version__})
        ov_model.set_rt_info(json.dumps(pred.classes), ["aether", "classes"])
        ov_model.set_rt_info(json.dumps(pred.pre.preprocessing), ["aether", "preprocessing"])
        ov_model.set_rt_info(_task(pred), ["aether", "task"])
        ov.save_model(ov_model, str(tmp / "model.xml"), compress_to_fp16=False)
        for name in ("labels.json", "preprocessing.json"):
            shutil.copyfile(model_dir / name, tmp / name)
    except AetherError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise AetherError(f"OpenVINO export of {src} failed: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    shutil.rmtree(folder, ignore_errors=True)
    tmp.replace(folder)
    # float32 inference: the CPU plugin would otherwise pick bf16 on CPUs that have it
    compiled = ov.Core().compile_model(str(folder / "model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    output = compiled.output(0)
    return folder / "model.xml", lambda x: compiled(x)[output], extra


# --- TensorRT (NVIDIA GPUs only) -----------------------------------------------------------------

def tensorrt_ready() -> None:
    """An AetherError saying what is missing unless a CUDA device and the tensorrt package are here."""
    import importlib.util

    import torch

    missing = []
    if not torch.cuda.is_available():
        missing.append("no CUDA device is visible to PyTorch")
    if importlib.util.find_spec("tensorrt") is None:
        missing.append("the tensorrt package is not installed (pip install tensorrt)")
    if missing:
        raise AetherError("export format=tensorrt needs an NVIDIA GPU with CUDA and TensorRT: "
                          + "; ".join(missing) + ". On this machine use format=onnx (onnxruntime) or "
                          "format=openvino (CPU)")


def export_tensorrt(run: str, model_dir: Path, model: Any, pred: Any, quantize: Optional[str],
                    calibration: Calibration) -> Tuple[Path, Runner, Dict[str, Any]]:
    """A serialized TensorRT engine built from model.onnx for this GPU (batch 1..64, optimised
    for 8); fp16 kernels allowed with quantize=fp16. An engine holds no metadata: the classes and
    preprocessing are in tensorrt.json beside it."""
    import tensorrt as trt
    import torch

    src = _onnx_fp32(run, model_dir)
    out = model_dir / ("model" + (f"-{quantize}" if quantize else "") + ".engine")
    shape = tuple(pred.pre.preprocessing["input_size"])
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(src.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise AetherError(f"TensorRT cannot parse {src}: {errors}")
    config = builder.create_builder_config()
    if quantize == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    profile.set_shape("images", (1, *shape), (8, *shape), (64, *shape))
    config.add_optimization_profile(profile)
    engine_bytes = builder.build_serialized_network(network, config)
    if engine_bytes is None:
        raise AetherError(f"TensorRT could not build an engine from {src} (see the messages above)")
    out.write_bytes(bytes(engine_bytes))
    engine = trt.Runtime(logger).deserialize_cuda_engine(out.read_bytes())
    context = engine.create_execution_context()

    def runner(x: Any) -> Any:
        results = []
        for start in range(0, len(x), 64):
            inp = torch.from_numpy(x[start:start + 64]).cuda().contiguous()
            context.set_input_shape("images", tuple(inp.shape))
            res = torch.empty(tuple(context.get_tensor_shape("logits")), dtype=torch.float32, device="cuda")
            context.set_tensor_address("images", inp.data_ptr())
            context.set_tensor_address("logits", res.data_ptr())
            stream = torch.cuda.current_stream()
            context.execute_async_v3(stream.cuda_stream)
            stream.synchronize()
            results.append(res.cpu().numpy())
        import numpy as np

        return np.concatenate(results)

    return out, runner, {"versions": {"tensorrt": trt.__version__}, "batch": [1, 8, 64],
                         "device": torch.cuda.get_device_name(0)}


_EXPORTERS = {"onnx": export_onnx_format, "torchscript": export_torchscript, "openvino": export_openvino,
              "tensorrt": export_tensorrt}


# --- helpers -----------------------------------------------------------------------------------

def _need(module: str, what: str, how: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise AetherError(f"export {what} needs the {module} package, which is not installed: {how}")


def _size(path: Path) -> int:
    if path.name == "model.xml":  # OpenVINO: the folder
        return sum(p.stat().st_size for p in path.parent.iterdir() if p.is_file())
    return path.stat().st_size if path.is_file() else 0


def _shown(artifact: Path) -> str:
    """The exported file as the user finds it in model/ (OpenVINO's is in its own folder)."""
    return f"{artifact.parent.name}/{artifact.name}" if artifact.name == "model.xml" else artifact.name


def _remove(artifact: Path) -> None:
    import shutil

    if artifact.name == "model.xml":
        shutil.rmtree(artifact.parent, ignore_errors=True)
    else:
        artifact.unlink(missing_ok=True)


def report_section(run_dir: Path, name: str, info: Dict[str, Any]) -> Optional[Path]:
    """Add (or replace) the section on this export in RUN/report.md, and rebuild report.html when
    the run has one; None when the run has no report."""
    report = run_dir / "report.md"
    if not report.is_file():
        return None
    title = f"## Export: {name}"
    verdict = "passed" if info["passed"] else ("below the threshold, kept (on_mismatch=warn)"
                                               if info.get("kept", True) else "failed, not kept")
    section = [title, "",
               f"`{_shown(Path(info['path']))}` ({info['bytes'] / 1e6:.2f} MB) against the PyTorch model on the "
               f"{info['images']} images of the run's {info['split']} split: {verdict} "
               f"(min_agreement {info['min_agreement']:g}).", "",
               "| measure | value |", "|---|---|",
               f"| {info.get('agreement_of', 'top-1')} agreement | {info['top1_agreement']:.4f} |",
               f"| {info.get('metric', 'accuracy')}, PyTorch | {info['metric_pytorch']:.4f} |",
               f"| {info.get('metric', 'accuracy')}, {name} | {info['metric_exported']:.4f} |",
               f"| max abs output difference | {info['max_abs_diff']:.3g} |", ""]
    lines = report.read_text(encoding="utf-8").splitlines()
    if title in lines:  # replace the earlier section on the same export, up to the next heading
        start = lines.index(title)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        lines[start:end] = section
    else:
        lines += ([""] if lines and lines[-1] else []) + section
    report.write_text("\n".join(lines).rstrip("\n") + "\n", encoding="utf-8")
    if (run_dir / "report.html").is_file():
        from aether.reporting.html import write_html

        write_html(run_dir)
    return report
