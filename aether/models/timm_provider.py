"""The timm backbone provider: any timm model name, weights from a local file, the HF cache or the hub
(aether.models.weights). `create` builds a classifier, `create_encoder` the same model as a
multi-scale feature encoder (timm's `features_only`) for segmentation and detection."""

from __future__ import annotations

from typing import Any, Callable, Dict

from aether.config.schema import ModelCfg
from aether.errors import AetherError
from aether.models.backbone import Backbone, Encoder, read_state_dict


class TimmProvider:
    name = "timm"

    def create(self, cfg: ModelCfg, num_classes: int) -> Backbone:
        import timm

        kwargs: Dict[str, Any] = dict(num_classes=num_classes, drop_rate=cfg.drop_rate, **_common_kwargs(cfg))
        model = _build(cfg, kwargs, lambda sd: _file_classes(cfg, kwargs, sd))
        data_config = timm.data.resolve_model_data_config(model)
        info = {"provider": self.name, "name": cfg.name, "kwargs": {k: v for k, v in kwargs.items() if k != "num_classes"}}
        return Backbone(model=model, head=model.get_classifier(), data_config=data_config, info=info)

    def create_encoder(self, cfg: ModelCfg) -> Encoder:
        """Every feature level of the model (`encoder.feature_info` says their channels and strides).
        The classifier of a weights file is never kept (-1: timm drops it), so a file saved from
        a classification run of any number of classes loads."""
        import timm

        kwargs: Dict[str, Any] = dict(features_only=True, **_common_kwargs(cfg))
        model = _build(cfg, kwargs, lambda sd: -1)
        info = {"provider": self.name, "name": cfg.name,
                "kwargs": {k: v for k, v in kwargs.items() if k != "features_only"}}
        return Encoder(model=model, channels=list(model.feature_info.channels()),
                       reductions=list(model.feature_info.reduction()),
                       data_config=timm.data.resolve_model_data_config(model), info=info)


def _common_kwargs(cfg: ModelCfg) -> Dict[str, Any]:
    """timm keywords shared by classifiers and encoders (drop_rate is the classifier's only)."""
    kwargs: Dict[str, Any] = dict(cfg.kwargs)
    if cfg.drop_path_rate:
        kwargs["drop_path_rate"] = cfg.drop_path_rate
    return kwargs


def _build(cfg: ModelCfg, kwargs: Dict[str, Any], file_classes: Callable[[Dict[str, Any]], int]):  # type: ignore[no-untyped-def]
    """timm.create_model with the weights the config names: `model.weights` (a local file, loaded
    through timm's own pretrained path so the model's key filtering - e.g. ViT position-embedding
    resizing - applies; `file_classes(state_dict)` is the classifier size to keep from it, -1 to
    drop it), else the cached/hub weights when `model.pretrained`, else none; then gradient
    checkpointing when asked for."""
    import timm

    base = cfg.name.split(".")[0]
    if not timm.models.is_model(base):
        from aether.suggest import did_you_mean

        raise AetherError(f"model.name={cfg.name}: timm has no such model{did_you_mean(base, timm.list_models())}")
    try:
        if cfg.weights:
            sd = read_state_dict(cfg.weights)
            overlay = {"state_dict": sd, "num_classes": file_classes(sd)}
            try:
                model = timm.create_model(cfg.name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
            except RuntimeError as exc:
                raise AetherError(f"model.weights={cfg.weights}: does not fit model '{cfg.name}': "
                                  f"{str(exc)[:500]}") from None
        elif cfg.pretrained:
            from aether.models.weights import pretrained_overlay

            model = timm.create_model(cfg.name, pretrained=True, pretrained_cfg_overlay=pretrained_overlay(cfg.name),
                                      **kwargs)
        else:
            model = timm.create_model(cfg.name, pretrained=False, **kwargs)
    except (AssertionError, NotImplementedError, RuntimeError) as exc:
        if not kwargs.get("features_only"):
            raise
        # timm says so when a model has no feature extraction (e.g. some hybrid or MLP models)
        raise AetherError(f"model.name={cfg.name}: timm cannot build it as a multi-scale feature encoder "
                          f"({str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}), which "
                          "segmentation and detection need; choose a convolutional or hierarchical model "
                          "(e.g. resnet18, convnext_atto, efficientnet_b0)") from None
    if cfg.grad_checkpointing:
        _set_grad_checkpointing(model, cfg.name)
    return model


def _set_grad_checkpointing(model: Any, name: str) -> None:
    # timm's non-reentrant checkpointing: gradients still reach LoRA adapters inside a block
    # whose input comes from frozen layers (the reentrant kind would drop them). A features_only
    # wrapper of a forward_intermediates model (ViT-style) checkpoints through the model it wraps.
    target = model if hasattr(model, "set_grad_checkpointing") else getattr(model, "model", model)
    try:
        target.set_grad_checkpointing(True)
    except (AssertionError, NotImplementedError, AttributeError):
        raise AetherError(f"model.grad_checkpointing=true: timm's '{name}' does not support gradient "
                          "checkpointing; set model.grad_checkpointing=false") from None


def _file_classes(cfg: ModelCfg, kwargs: Dict[str, Any], sd: Dict[str, Any]) -> int:
    """The classifier size of a weights file, so timm keeps its classifier when it matches this
    dataset's classes (-1 when the file has none: timm then re-initialises it)."""
    import timm

    probe = timm.create_model(cfg.name, pretrained=False, **kwargs)
    classifier = probe.pretrained_cfg.get("classifier", "head")
    file_classes = -1
    for c in classifier if isinstance(classifier, (list, tuple)) else [classifier]:
        w = sd.get(f"{c}.weight")
        if w is not None:
            file_classes = int(w.shape[0])
    return file_classes
