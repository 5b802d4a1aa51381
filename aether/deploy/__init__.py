"""Deployment: a trained run's `model/` folder as a BentoML service, batch predictions, ONNX.

    model_dir.py        a finished run's model/ folder (rebuilt from best.ckpt when missing)
    predictor.py        load a model folder; check, decode and preprocess images; top-k; batches
    tasks.py            any task's model: serve options, its codec, `TaskPredictor`
    bento.py            `aether export`: BentoML model store + RUN/bento/ (service + bentofile)
    service_template.py the BentoML service copied into RUN/bento/service.py
    serving.py          what the service needs besides the model: upload limit, JSON errors
    predict.py          `aether predict`: a folder or list of images -> CSV + JSON
    onnx_export.py      `aether export format=onnx`: model.onnx, parity-checked; the onnx backend
    openvino_runner.py  the openvino serving backend (`aether export backend=openvino`)
    explain.py          `aether explain`: heatmaps for any images (the service's /explain: explain=true)
    benchmark.py        `aether benchmark`: every format's size, latency, throughput and metric
    export_formats.py   `format=torchscript|openvino|tensorrt`, `quantize=int8|fp16`: packages with
                        labels + preprocessing inside, agreement measured on the run's test split

Nothing here knows a task: the task model.json records names its codec (aether.tasks.codec;
each task's in aether/tasks/<task>/serving.py), which turns a file into the model's input and
its output into answers, CSV rows, files and ONNX outputs.

Every module imports torch/BentoML lazily, inside functions, so the CLI stays fast.
"""
