"""Networks for dense tasks: a timm encoder (`features_only`) plus a task head.

`DenseNet.encoder` is the backbone every strategy acts on; `DenseNet.head` (decoder, FPN,
detector) is what `Backbone.head` points to, so it trains under every strategy: LoRA adapts the
encoder and keeps the head fully trainable (PEFT `modules_to_save`), linear probe freezes the
encoder, gradual unfreezing opens the encoder stages top-down after the head.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

from torch import nn

from aether.config.schema import ModelCfg
from aether.errors import AetherError


class DenseNet(nn.Module):
    def __init__(self, encoder: nn.Module, head: nn.Module, arch: str) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.aether_arch = arch  # read by the LoRA target picker (family of the timm model)

    def forward(self, x: Any, *args: Any) -> Any:
        # the head is called as a module (never through its attributes) so that PEFT's
        # modules_to_save copy of it is the one that runs
        return self.head(x, self.encoder, *args)

    def aether_layer_map(self) -> Dict[str, int]:
        """Parameter name -> depth: the encoder's top-level stages in order, then the head."""
        stages = {name: i for i, (name, _) in enumerate(self.encoder.named_children())}
        top = len(stages)
        out = {}
        for n, _ in self.named_parameters():
            parts = n.split(".")
            out[n] = stages.get(parts[1], top) if parts[0] == "encoder" else top
        return out


def create_encoder(cfg: ModelCfg) -> Tuple[nn.Module, Dict[str, Any], Dict[str, Any]]:
    """A timm model with `features_only=True` (every feature level; `encoder.feature_info` says their
    channels and strides): (encoder, data config, info to rebuild it).
    Weights come from `model.weights` (a local file), the HF cache or the hub, as for classification."""
    import timm

    from aether.models.backbone import read_state_dict
    from aether.models.weights import pretrained_overlay

    base = cfg.name.split(".")[0]
    if not timm.models.is_model(base):
        from aether.suggest import did_you_mean

        raise AetherError(f"model.name={cfg.name}: timm has no such model{did_you_mean(base, timm.list_models())}")
    kwargs: Dict[str, Any] = dict(features_only=True, **cfg.kwargs)
    if cfg.drop_path_rate:
        kwargs["drop_path_rate"] = cfg.drop_path_rate
    try:
        if cfg.weights:
            overlay = {"state_dict": read_state_dict(cfg.weights), "num_classes": -1}
            encoder = timm.create_model(cfg.name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
        elif cfg.pretrained:
            encoder = timm.create_model(cfg.name, pretrained=True, pretrained_cfg_overlay=pretrained_overlay(cfg.name),
                                        **kwargs)
        else:
            encoder = timm.create_model(cfg.name, pretrained=False, **kwargs)
    except AetherError:
        raise
    except RuntimeError as exc:
        if cfg.weights:
            raise AetherError(f"model.weights={cfg.weights}: does not fit model '{cfg.name}': {str(exc)[:500]}") from None
        raise
    data_config = timm.data.resolve_model_data_config(encoder)
    info = {"provider": "timm", "name": cfg.name, "features_only": True,
            "kwargs": {k: v for k, v in kwargs.items() if k != "features_only"}}
    return encoder, data_config, info


def make_head(task: str, options: Dict[str, Any], encoder: nn.Module, num_classes: int,
              pre: Dict[str, Any]) -> nn.Module:
    """The task's head over `encoder`'s feature levels (used for training and to rebuild a saved model)."""
    channels, reductions = encoder.feature_info.channels(), encoder.feature_info.reduction()
    if task == "segmentation":
        from aether.models.segmentation import FPNDecoder

        return FPNDecoder(channels, reductions, num_classes, options["decoder_channels"])
    if task == "detection":
        from aether.models.detection import DetectorHead

        # a model.json written before `strides` existed (or an unresolved "auto") has the old layout;
        # an NMS threshold still "tune" (never tuned) is torchvision's default for the head
        strides = options.get("strides")
        nms = options.get("nms_threshold")
        return DetectorHead(channels, reductions, num_classes, options["head"], options["fpn_channels"],
                            pre["input_size"][-1], pre["mean"], pre["std"], options["score_threshold"],
                            options["detections_per_image"], strides=strides if isinstance(strides, list) else None,
                            nms_thresh=float(nms) if isinstance(nms, (int, float)) else None)
    raise AetherError(f"task '{task}' has no dense head")


def rebuild_dense(info: Dict[str, Any], num_classes: int, pre: Dict[str, Any]) -> DenseNet:
    """The untrained network a saved dense-task `model/` folder describes (weights loaded by the caller)."""
    kwargs = dict(info.get("kwargs", {}))
    cfg = ModelCfg(provider="timm", name=info["name"], pretrained=False, drop_path_rate=kwargs.pop("drop_path_rate", 0.0),
                   kwargs=kwargs)
    encoder = create_encoder(cfg)[0]
    return DenseNet(encoder, make_head(info["task"], info["task_options"], encoder, num_classes, pre), info["name"])
