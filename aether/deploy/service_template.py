"""Aether's BentoML service (copied by `aether export` into RUN/bento/service.py).

    bentoml serve RUN/bento                          # http://localhost:3000
    curl -F image=@cat.jpg localhost:3000/predict    # {"label": ..., "score": ..., "top_k": [...]}
    # other tasks answer in their own shape (their codec, aether/tasks/<task>/serving.py): multilabel
    # {"labels", "scores"}, detection {"boxes", "labels", "scores"}, segmentation {"width", "height",
    # "areas", "mask_png"}
    curl -F images=@a.jpg -F images=@b.png localhost:3000/predict_batch
    curl -X POST localhost:3000/metadata             # tag, classes, metrics, input size, limits
    curl -F image=@cat.jpg localhost:3000/explain    # exported with explain=true: the /predict answer
                                                     # + "heatmap_png" (base64 Grad-CAM overlay)
    curl localhost:3000/readyz                       # 200 once the model is loaded (/livez, /healthz)

Two services, BentoML's composition pattern: `AetherClassifier` takes uploads, checks and
preprocesses them with Aether's own code (the dataset doctor's checks, the evaluation
transform) and answers bad input with a 4xx JSON error; `AetherModel` holds the network and
runs it with adaptive batching, so concurrent single-image requests become one forward pass.
The settings (model tag, limits, batching, the task and its serve options) are in
aether_serve.json beside this file. What differs between tasks is the task's codec, looked up
by the task name in the settings without importing the task's training code (Lightning): a
served Bento loads aether.deploy, the codec and the network, nothing it does not use.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Dict, List

import bentoml
import numpy as np

from aether.deploy.serving import RequestGuard, error_response, load_settings, return_freed_memory
from aether.tasks.codec import model_task

SETTINGS = load_settings(Path(__file__).with_name("aether_serve.json"))
BATCHING = SETTINGS["batching"]
TASK = model_task(SETTINGS)
EXPLAIN = SETTINGS.get("explain") or {"enabled": False}


@bentoml.service(name="aether_model", workers=1, traffic={"timeout": 120})
class AetherModel:
    stored = bentoml.models.BentoModel(SETTINGS["tag"])

    def __init__(self) -> None:
        options = SETTINGS.get("task_options") or {}  # classification: temperature, test-time augmentation
        backend = SETTINGS.get("backend")
        if backend == "onnx":  # `aether export ... backend=onnx`
            from aether.deploy.onnx_export import OnnxRunner

            self.predictor = OnnxRunner(Path(self.stored.path) / "model.onnx", task=TASK, options=options)
        elif backend == "openvino":  # `aether export ... backend=openvino`
            from aether.deploy.openvino_runner import OpenVinoRunner

            self.predictor = OpenVinoRunner(Path(self.stored.path) / "openvino" / "model.xml", task=TASK,
                                            options=options, model_dir=Path(self.stored.path))
        else:
            from aether.deploy.tasks import TaskPredictor

            # the model/ folder as exported: safetensors weights + JSON, loaded without pickle
            self.predictor = TaskPredictor(Path(self.stored.path), tta=options.get("tta"))

    @bentoml.api(batchable=bool(BATCHING["enabled"]), max_batch_size=max(2, int(BATCHING["max_batch_size"])),
                 max_latency_ms=int(BATCHING["max_latency_ms"]))
    def classify(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) preprocessed images -> the task's raw output: (N, classes) probabilities
        for classification (sigmoid scores for multilabel, class-id masks, padded detections)."""
        return self.predictor.outputs(batch)


@bentoml.service(name="aether_classifier", traffic={"timeout": 120})
class AetherClassifier:
    model = bentoml.depends(AetherModel)

    def __init__(self) -> None:
        from aether.deploy.predictor import ImageLimits, Preprocessor
        from aether.deploy.tasks import make_codec

        return_freed_memory()
        self.pre = Preprocessor(SETTINGS["preprocessing"], SETTINGS["classes"], ImageLimits(**SETTINGS["limits"]))
        self.top = int(SETTINGS["top_k"])
        self.codec = make_codec(self.pre, SETTINGS.get("task_options") or {"task": TASK, "top_k": self.top})
        self._explainer: Any = None  # built on the first /explain call (loads the PyTorch network here)
        self._explain_lock = threading.Lock()  # grad-cam's hooks hold one image's activations at a time

    async def _tensor(self, path: Path) -> Any:
        """(preprocessed tensor, original (width, height)) of one upload."""
        import anyio

        return await anyio.to_thread.run_sync(self.codec.load, str(path))

    async def _classify(self, batch: np.ndarray) -> np.ndarray:
        """Call the model service; retried on a dropped connection (the call is idempotent).
        BentoML 1.4.40's internal client can reuse a pooled connection that the model worker
        has just closed as idle (bentoml/BentoML#4971), failing a good request with a 500; when
        the close lands while the answer is being read, aiohttp raises a bare
        RuntimeError("Connection closed.") instead (seen under a 100-request burst: the model
        worker had answered 200)."""
        import aiohttp

        for attempt in range(3):
            try:
                return await self.model.to_async.classify(batch)
            except (aiohttp.ClientConnectionError, RuntimeError) as exc:
                dropped = not isinstance(exc, RuntimeError) or "Connection closed" in str(exc)
                if attempt == 2 or not dropped:
                    raise
        raise AssertionError("unreachable")

    @bentoml.api
    async def predict(self, image: Path) -> Dict[str, Any]:
        """One image file -> {label, score, top_k: [{label, score}, ...]} (other tasks: their answer)."""
        from aether.deploy.predictor import BadImage

        try:
            x, size = await self._tensor(image)
        except BadImage as bad:
            return error_response(bad.code, bad.detail)
        rows = await self._classify(x.unsqueeze(0).numpy())
        return self.codec.decode(rows, [size])[0]

    @bentoml.api
    async def predict_batch(self, images: List[Path]) -> Dict[str, Any]:
        """Several image files -> {"predictions": [...]} in upload order; an unusable file gets
        {"error", "detail"} in its place and the others are still classified."""
        import torch

        from aether.deploy.predictor import BadImage

        out: List[Dict[str, Any]] = []
        good, tensors, sizes = [], [], []
        for i, path in enumerate(images):
            try:
                x, size = await self._tensor(path)
            except BadImage as bad:
                out.append({"error": bad.code, "detail": bad.detail})
                continue
            tensors.append(x)
            sizes.append(size)
            good.append(i)
            out.append({})
        if tensors:
            rows = await self._classify(torch.stack(tensors).numpy())
            for i, row in zip(good, self.codec.decode(rows, sizes)):
                out[i] = row
        return {"predictions": [{"index": i, **row} for i, row in enumerate(out)]}

    @bentoml.api
    async def explain(self, image: Path) -> Dict[str, Any]:
        """One image file -> the /predict answer plus "method" and "heatmap_png": the base64 PNG of
        the class-activation heatmap of the top-scoring class over the preprocessed image (at the
        model's input size). Needs the PyTorch weights and grad-cam, whatever backend serves
        /predict, so it is off unless the bento was exported with explain=true."""
        import anyio

        from aether.deploy.predictor import BadImage

        if not EXPLAIN.get("enabled"):
            return error_response("explain_not_enabled", "this bento was exported without explain=true; "
                                  "`aether export run=RUN explain=true` adds the heatmap endpoint", 404)
        try:
            x, size = await self._tensor(image)
        except BadImage as bad:
            return error_response(bad.code, bad.detail)
        rows = await self._classify(x.unsqueeze(0).numpy())
        answer = self.codec.decode(rows, [size])[0]
        png = await anyio.to_thread.run_sync(self._heatmap_png, x, int(np.argmax(rows[0])))
        return {**answer, "method": EXPLAIN["method"], "heatmap_png": png}

    def _heatmap_png(self, x: Any, target: int) -> str:
        import base64
        import io

        from PIL import Image

        with self._explain_lock:
            if self._explainer is None:
                from aether.deploy.predictor import Predictor
                from aether.reporting.heatmaps import Heatmapper

                network = Predictor(Path(bentoml.models.get(SETTINGS["tag"]).path), device="cpu").model
                self._explainer = Heatmapper(network, SETTINGS["preprocessing"], EXPLAIN["method"])
            cams, _ = self._explainer.heatmaps(x.unsqueeze(0), targets=[target])
            overlay = self._explainer.overlay(x, cams[0])
        buf = io.BytesIO()
        Image.fromarray(overlay).save(buf, format="PNG")
        return base64.b64encode(buf.getvalue()).decode("ascii")

    @bentoml.api
    def metadata(self) -> Dict[str, Any]:
        """What is served: model tag, classes, test metrics, input size, limits, batching."""
        return {
            "tag": SETTINGS["tag"],
            "classes": SETTINGS["classes"],
            "metrics": SETTINGS["metrics"],
            "labels": SETTINGS["labels"],
            "input_size": SETTINGS["preprocessing"]["input_size"],
            "preprocessing": SETTINGS["preprocessing"],
            "limits": {**SETTINGS["limits"], "max_upload_bytes": SETTINGS["max_upload_bytes"]},
            "batching": BATCHING,
            "backend": SETTINGS.get("backend", "torch"),
            "top_k": self.top,
            "task": TASK,
            "task_options": SETTINGS.get("task_options") or {},
            "explain": EXPLAIN,
        }


AetherClassifier.add_asgi_middleware(RequestGuard, max_bytes=int(SETTINGS["max_upload_bytes"]),
                                      fields={"/predict": {"image": 1}, "/predict_batch": {"images": 0},
                                              "/explain": {"image": 1}})
