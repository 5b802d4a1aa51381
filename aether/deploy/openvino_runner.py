"""The serving backend for `aether export backend=openvino`: the OpenVINO IR that
`aether export format=openvino` wrote (RUN/model/openvino/model.xml, agreement-checked on the
run's test split) on OpenVINO's CPU plugin, with the same contract as the onnx backend: the
task's codec turns the network's output into what the model worker returns.

Inference runs in float32 (INFERENCE_PRECISION_HINT): on CPUs with AMX/AVX-512 BF16 the plugin
would otherwise pick bf16 and serve numbers that differ from the ones the agreement check measured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aether.deploy.onnx_export import OnnxRunner


class OpenVinoRunner(OnnxRunner):
    backend = "openvino"

    def open(self, path: Path) -> None:
        import openvino as ov

        self.compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        self.output = self.compiled.output(0)

    def logits(self, batch: Any) -> Any:
        import numpy as np

        # a new infer request per call: the model worker may run calls from several threads
        return self.compiled.create_infer_request().infer([np.asarray(batch, dtype=np.float32)])[self.output]
