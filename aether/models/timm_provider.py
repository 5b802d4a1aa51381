"""The timm backbone provider: any timm model name, weights from a local file, the HF cache or the hub
(aether.models.weights)."""

from __future__ import annotations

from typing import Any, Dict

from aether.config.schema import ModelCfg
from aether.errors import AetherError
from aether.models.backbone import Backbone, read_state_dict


class TimmProvider:
    name = "timm"

    def create(self, cfg: ModelCfg, num_classes: int) -> Backbone:
        import timm

        base = cfg.name.split(".")[0]
        if not timm.models.is_model(base):
            from aether.suggest import did_you_mean

            raise AetherError(f"model.name={cfg.name}: timm has no such model{did_you_mean(base, timm.list_models())}")
        kwargs: Dict[str, Any] = dict(num_classes=num_classes, drop_rate=cfg.drop_rate, **cfg.kwargs)
        if cfg.drop_path_rate:
            kwargs["drop_path_rate"] = cfg.drop_path_rate
        if cfg.weights:
            model = self._from_file(cfg, kwargs, num_classes)
        elif cfg.pretrained:
            from aether.models.weights import pretrained_overlay

            model = timm.create_model(cfg.name, pretrained=True, pretrained_cfg_overlay=pretrained_overlay(cfg.name),
                                      **kwargs)
        else:
            model = timm.create_model(cfg.name, pretrained=False, **kwargs)
        if cfg.grad_checkpointing:
            # timm's non-reentrant checkpointing: gradients still reach LoRA adapters inside a
            # block whose input comes from frozen layers (the reentrant kind would drop them)
            try:
                model.set_grad_checkpointing(True)
            except (AssertionError, NotImplementedError, AttributeError):
                raise AetherError(f"model.grad_checkpointing=true: timm's '{cfg.name}' does not support gradient "
                                  "checkpointing; set model.grad_checkpointing=false") from None
        data_config = timm.data.resolve_model_data_config(model)
        info = {"provider": self.name, "name": cfg.name, "kwargs": {k: v for k, v in kwargs.items() if k != "num_classes"}}
        return Backbone(model=model, head=model.get_classifier(), data_config=data_config, info=info)

    @staticmethod
    def _from_file(cfg: ModelCfg, kwargs: Dict[str, Any], num_classes: int):  # type: ignore[no-untyped-def]
        """Load a local weights file through timm's own pretrained path, so the model's key
        filtering (e.g. ViT position-embedding resizing) applies. The classifier is kept only
        when its shape matches this dataset's classes; otherwise it is re-initialised."""
        import timm

        sd = read_state_dict(cfg.weights)  # type: ignore[arg-type]
        probe = timm.create_model(cfg.name, pretrained=False, **{**kwargs, "num_classes": num_classes})
        classifier = probe.pretrained_cfg.get("classifier", "head")
        classifiers = classifier if isinstance(classifier, (list, tuple)) else [classifier]
        file_classes = None
        for c in classifiers:
            w = sd.get(f"{c}.weight")
            if w is not None:
                file_classes = int(w.shape[0])
        overlay = {"state_dict": sd, "num_classes": file_classes if file_classes is not None else -1}
        try:
            model = timm.create_model(cfg.name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
        except RuntimeError as exc:
            raise AetherError(f"model.weights={cfg.weights}: does not fit model '{cfg.name}': {str(exc)[:500]}") from None
        return model
