"""`aether export run=RUN`: the run's model into the BentoML model store, and RUN/bento/.

The store entry `aether-<name>:<version>` holds a copy of `model/` (safetensors + JSON: nothing
is pickled; BentoML's deprecated `custom_objects` would be). The version is a hash of the
weights, labels and preprocessing, so exporting the same run twice is one version and a newer
run adds one (`bentoml models list` is the model history). RUN/bento/ holds `service.py`
(aether/deploy/service_template.py), `aether_serve.json` (its settings) and `bentofile.yaml`.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from pathlib import Path
from typing import Any, Dict, Optional

from aether.deploy.model_dir import check_run, is_exported
from aether.errors import AetherError

DEFAULT_MAX_UPLOAD_MB = 20.0
SERVICE_CLASS = "AetherClassifier"
# What each backend serves besides the weights' JSON: the exported graph `aether export format=`
# wrote (store entry and version hash both take it; the agreement JSON travels with it)
BACKENDS = {"torch": (), "onnx": ("model.onnx",), "openvino": ("openvino",)}
BACKEND_JSON = {"onnx": "onnx.json", "openvino": "openvino.json"}
BACKEND_PACKAGES = {"onnx": ("onnxruntime",), "openvino": ("openvino",)}
CARD = "MODEL_CARD.md"  # model/'s model card (aether.reporting.model_card): documents, defines no prediction


def _served(rel: str, backend: str) -> bool:
    """Whether `rel` (a path under model/) is the exported graph that `backend` serves."""
    return rel.split("/", 1)[0] in BACKENDS[backend]


def model_version(model_dir: Path, backend: str = "torch") -> str:
    """Content hash of what defines the predictions: weights, a LoRA adapter kept separate,
    classes, preprocessing, architecture (and the exported graph when that is what serves)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(model_dir).as_posix()
        if (is_exported(rel) and not _served(rel, backend)) or rel == CARD:
            continue
        digest.update(rel.encode() + b"\0")
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def model_name(run_dir: Path, name: Optional[str]) -> str:
    if not name:
        info = json.loads((run_dir / "model" / "model.json").read_text())
        recipe = _config(run_dir).get("recipe") or "run"
        name = f"{recipe}-{info.get('name', 'model')}"
    slug = re.sub(r"[^a-z0-9_.-]+", "-", str(name).lower()).strip("-.") or "model"
    return slug if slug.startswith("aether-") else f"aether-{slug}"[:63]


def _config(run_dir: Path) -> Dict[str, Any]:
    if not (run_dir / "config.yaml").is_file():
        return {}
    from omegaconf import OmegaConf

    out = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=False)
    return out if isinstance(out, dict) else {}


def _metrics(run_dir: Path) -> Dict[str, Any]:
    path = run_dir / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def dataset_fingerprint(metrics: Dict[str, Any]) -> str:
    """Hash of the data the model saw: the content hash of its images when the run recorded one
    (metrics.json data.fingerprint: every file's hash, label and split), else of its source,
    classes, per-class counts and split sizes."""
    data = metrics.get("data") or {}
    fp = data.get("fingerprint")
    if isinstance(fp, dict) and isinstance(fp.get("sha256"), str):
        return fp["sha256"][:16]
    keys = ("source", "format", "classes", "class_counts", "num_train", "num_val", "num_test")
    blob = json.dumps({k: data.get(k) for k in keys}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def batch_plan(model_dir: Path, budget_s: float = 1.0) -> Dict[str, Any]:
    """Adaptive-batching limits sized from the model: time a forward pass of 8 images here and
    allow batches that fill about `budget_s` of compute (a power of two in [4, 64]). BentoML's
    dispatcher only forms big batches when requests queue up, so the budget costs no latency at
    low load; under load bigger batches spread the per-call cost (ResNet-18 on 2 CPU cores: 16
    per batch served 0.81x in-process throughput, 4 per batch 0.63x; benchmarks/serve.py)."""
    import torch

    from aether.deploy.tasks import TaskPredictor

    pred = TaskPredictor(model_dir)
    x = torch.zeros(8, *pred.pre.preprocessing["input_size"])
    pred.outputs(x[:1])  # warm-up
    times = []
    for _ in range(3):  # the fastest of three: other work on the machine only ever adds time
        t0 = time.perf_counter()
        pred.outputs(x)
        times.append(time.perf_counter() - t0)
    per_image = max(min(times) / 8, 1e-5)
    size = 4
    while size < 64 and (size * 2) * per_image <= budget_s:
        size *= 2
    return {
        "enabled": True,
        "max_batch_size": size,
        # the dispatcher answers 503 when it predicts a request would wait longer than this:
        # generous, so a burst queues rather than fails
        "max_latency_ms": int(max(10_000, 20 * size * per_image * 1000)),
        "measured_ms_per_image": round(per_image * 1000, 3),
        "measured_on": str(pred.device),
    }


def export_bento(run: str, name: Optional[str] = None, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
                 batching: bool = True, backend: str = "torch", score_threshold: Optional[float] = None,
                 tta: Optional[str] = None, reject_below: Optional[float] = None, explain: bool = False,
                 explain_method: str = "gradcam") -> Dict[str, Any]:
    """Store the model, write RUN/bento/; return what was done (tag, paths). `backend="onnx"`
    serves RUN/model/model.onnx with onnxruntime (exported and parity-checked first if missing);
    `backend="openvino"` RUN/model/openvino/ with OpenVINO (exported first if missing, which
    checks agreement on the run's test split: `aether export format=openvino`).
    `score_threshold`: detections below it are left out of answers (default: the run's draw_threshold).
    `tta`, `reject_below` (classification): the served views and the `unknown` threshold (default:
    the run's test.tta and calibration.reject_below); the run's temperature is always applied.
    `explain`: the service's /explain endpoint answers heatmaps (`explain_method`: gradcam,
    layercam or gradcam++) for the image classifiers (classification, multilabel)."""
    import bentoml
    from bentoml.exceptions import NotFound

    from aether.deploy.predictor import ImageLimits
    from aether.deploy.tasks import serve_options
    from aether.tasks.codec import codec_class

    run_dir = check_run(run)
    model_dir = run_dir / "model"
    if backend not in BACKENDS:
        raise AetherError(f"export: backend={backend!r}: expected one of {', '.join(BACKENDS)}")
    # before any work: a bad threshold or explain= stops here
    task_options = serve_options(model_dir, score_threshold, tta=tta, reject_below=reject_below)
    if explain:
        _explainable(model_dir, explain_method)
    if backend == "onnx" and not (model_dir / "model.onnx").is_file():
        from aether.deploy.onnx_export import export_onnx

        export_onnx(run)
    if backend == "openvino" and not (model_dir / "openvino" / "model.xml").is_file():
        from aether.deploy.export_formats import export_package

        export_package(run, "openvino")
    tag = f"{model_name(run_dir, name)}:{model_version(model_dir, backend)}"
    metrics = _metrics(run_dir)
    cfg = _config(run_dir)
    classes = json.loads((model_dir / "labels.json").read_text())
    pre = json.loads((model_dir / "preprocessing.json").read_text())
    test = metrics.get("test") or {}
    labels = {
        "framework": "aether",
        "recipe": str(cfg.get("recipe") or ""),
        "backbone": str(json.loads((model_dir / "model.json").read_text()).get("name", "")),
        "dataset_fingerprint": dataset_fingerprint(metrics),
        "test_accuracy": f"{test['accuracy']:.4f}" if "accuracy" in test else "",
        "test_f1_macro": f"{test['f1_macro']:.4f}" if "f1_macro" in test else "",
        "task": task_options["task"],
    }
    served_metrics = codec_class(task_options["task"]).metrics  # the task's own test metrics
    metadata = {"classes": classes, "preprocessing": pre, "run": str(run_dir.resolve()),
                "metrics": {k: test[k] for k in served_metrics if k in test}}
    try:
        stored = bentoml.models.get(tag)
        created = False
    except NotFound:
        with bentoml.models.create(tag, labels=labels, metadata=metadata) as stored:
            for item in model_dir.iterdir():  # model files + a LoRA adapter/ folder when present
                if is_exported(item.name) and not (_served(item.name, backend) or item.name == BACKEND_JSON.get(backend)):
                    continue
                dest = Path(stored.path) / item.name
                shutil.copytree(item, dest) if item.is_dir() else shutil.copy2(item, dest)
        created = True

    limits = ImageLimits.from_run(run_dir)
    plan = batch_plan(model_dir)  # timed with PyTorch; onnxruntime is usually as fast or faster
    plan["enabled"] = batching
    settings = {
        "tag": str(stored.tag),
        "backend": backend,
        "classes": classes,
        "preprocessing": pre,
        "metrics": metadata["metrics"],
        "labels": labels,
        "limits": {"max_pixels": limits.max_pixels, "min_side": limits.min_side},
        "max_upload_bytes": int(max_upload_mb * 1024 * 1024),
        "top_k": min(5, len(classes)),
        "task": task_options["task"],
        "task_options": task_options,
        "batching": plan,
        "explain": {"enabled": bool(explain), "method": explain_method},
    }
    bento_dir = write_bento_dir(run_dir / "bento", settings, model_dir / CARD)
    return {"tag": str(stored.tag), "created": created, "bento_dir": str(bento_dir),
            "store_path": str(bentoml.models.get(tag).path), "batching": plan, "backend": backend,
            "task": task_options["task"], "explain": bool(explain)}


def _explainable(model_dir: Path, method: str) -> None:
    from aether.reporting.heatmaps import METHODS

    if method not in METHODS:
        raise AetherError(f"export: explain_method={method!r}: expected one of {', '.join(METHODS)}")
    info = json.loads((model_dir / "model.json").read_text())
    if info.get("features_only"):
        raise AetherError(f"export: explain=true: not available for task={info.get('task')} (heatmaps explain "
                          "image classifiers: classification, multilabel)")


def write_bento_dir(bento_dir: Path, settings: Dict[str, Any], card: Optional[Path] = None) -> Path:
    """RUN/bento/: service.py, aether_serve.json, bentofile.yaml and, when the run has one, the
    model card (the bento's description: `bentoml build` carries it)."""
    bento_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(__file__).with_name("service_template.py"), bento_dir / "service.py")
    (bento_dir / "aether_serve.json").write_text(json.dumps(settings, indent=2))
    with_card = card is not None and card.is_file()
    if with_card:
        shutil.copyfile(card, bento_dir / CARD)
    elif (bento_dir / CARD).exists():
        (bento_dir / CARD).unlink()  # a card left by an earlier export of another model
    name = settings["tag"].split(":")[0]
    (bento_dir / "bentofile.yaml").write_text(_bentofile(name, settings, with_card))
    return bento_dir


def _bentofile(name: str, settings: Dict[str, Any], with_card: bool = False) -> str:
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    extra = BACKEND_PACKAGES.get(str(settings.get("backend")), ())
    if (settings.get("explain") or {}).get("enabled"):
        extra = (*extra, "grad-cam", "opencv-python-headless")
    for pkg in ("torch", "torchvision", "timm", "safetensors", "pillow", "numpy", "omegaconf", "pydantic", "bentoml",
                *extra):
        try:
            pins.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            continue
    labels = "\n".join(f"  {k}: \"{v}\"" for k, v in settings["labels"].items())
    packages = "\n".join(f"    - \"{p}\"" for p in pins)
    # lock_packages: false - locking resolves against the public index, which fails offline.
    # Aether itself must be importable where the bento runs (pip install aether / the wheel).
    return (f"# Written by `aether export`; `bentoml serve .` or `bentoml build` from this folder.\n"
            f"service: \"service:{SERVICE_CLASS}\"\n"
            f"name: {name}\n"
            + (f"description: \"file: ./{CARD}\"\n" if with_card else "")
            + f"labels:\n{labels}\n"
            f"include:\n  - \"service.py\"\n  - \"aether_serve.json\"\n"
            + (f"  - \"{CARD}\"\n" if with_card else "")
            + f"models:\n  - \"{settings['tag']}\"\n"
            f"envs:\n  - name: BENTOML_DO_NOT_TRACK\n    value: \"true\"\n  - name: HF_HUB_OFFLINE\n    value: \"1\"\n"
            f"python:\n  lock_packages: false\n  packages:\n{packages}\n")
