"""Deployment: a trained run's `model/` folder as a BentoML service, batch predictions, ONNX.

    predictor.py        load a model folder; check, decode and preprocess images; top-k
    bento.py            `aether export`: BentoML model store + RUN/bento/ (service + bentofile)
    service_template.py the BentoML service copied into RUN/bento/service.py
    serving.py          what the service needs besides the model: upload limit, JSON errors
    predict.py          `aether predict`: a folder or list of images -> CSV + JSON
    tasks.py            per task: preprocessing, raw model output, answer (multilabel, detection,
                        segmentation; classification unchanged), shared by service and predict
    task_outputs.py     `aether predict` files for multilabel, detection and segmentation runs
    onnx_export.py      `aether export format=onnx`: model.onnx, parity-checked

Every module imports torch/BentoML lazily, inside functions, so the CLI stays fast.
"""
