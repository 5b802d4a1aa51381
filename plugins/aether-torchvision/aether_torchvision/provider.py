"""The `torchvision` backbone provider: torchvision classification models, built offline.

Implements Aether's provider interface: ``create(cfg: ModelCfg, num_classes) -> Backbone``.
``Backbone.info`` holds everything `aether.models.saved.load_model_dir` needs to rebuild the
network (provider, name, kwargs), so saved runs reload without this module knowing about them.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Tuple

import torchvision
from torch import nn

from aether.config.schema import ModelCfg
from aether.errors import AetherError
from aether.models.backbone import Backbone, read_state_dict

log = logging.getLogger(__name__)

DEFAULT_DATA_CONFIG: Dict[str, Any] = {
    "input_size": (3, 224, 224),
    "mean": (0.485, 0.456, 0.406),  # ImageNet
    "std": (0.229, 0.224, 0.225),
    "interpolation": "bilinear",
    "crop_pct": 0.875,
    "crop_mode": "center",
}
HEAD_ATTRS = ("fc", "classifier", "heads", "head")  # where torchvision keeps the classifier
AUX_PREFIXES = ("AuxLogits.", "aux1.", "aux2.")  # inception_v3 / googlenet auxiliary heads
# Aether's generic options -> torchvision builder keyword (passed only when non-zero).
OPTION_KWARGS = {"drop_rate": "dropout", "drop_path_rate": "stochastic_depth_prob"}


def classification_models() -> list[str]:
    return list(torchvision.models.list_models(module=torchvision.models))


def find_head(model: nn.Module) -> Tuple[str, nn.Module]:
    """(qualified name, module) of the final classifier layer: the last Linear (or 1x1 Conv2d,
    as in SqueezeNet) under `fc` / `classifier` / `heads` / `head`, else the model's last Linear."""
    for attr in HEAD_ATTRS:
        sub = getattr(model, attr, None)
        if isinstance(sub, nn.Module):
            layers = [(n, m) for n, m in sub.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
            if layers:
                name, module = layers[-1]
                return (f"{attr}.{name}" if name else attr), module
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise AetherError(f"{type(model).__name__}: no classifier layer found (no nn.Linear module)")
    return linears[-1]


def _data_config(name: str, model: nn.Module) -> Dict[str, Any]:
    """The eval preprocessing of the model's torchvision weights recipe (an enum: no download),
    or the ImageNet defaults."""
    dc = dict(DEFAULT_DATA_CONFIG)
    try:
        preset = torchvision.models.get_model_weights(name).DEFAULT.transforms()
        crop, resize = int(preset.crop_size[0]), int(preset.resize_size[0])
        dc.update(input_size=(3, crop, crop), mean=tuple(preset.mean), std=tuple(preset.std),
                  interpolation=preset.interpolation.value, crop_pct=round(crop / resize, 4))
    except Exception:  # no weights enum, or a transform preset without these attributes
        pass
    size = getattr(model, "image_size", None)  # ViT: the model only accepts its own size
    if isinstance(size, int):
        dc["input_size"] = (3, size, size)
    return dc


class TorchvisionProvider:
    name = "torchvision"

    def create(self, cfg: ModelCfg, num_classes: int) -> Backbone:
        if cfg.name not in classification_models():
            from aether.suggest import did_you_mean

            raise AetherError(f"model.name={cfg.name}: torchvision has no such classification model"
                              f"{did_you_mean(cfg.name, classification_models())}")
        if cfg.pretrained and not cfg.weights:
            raise AetherError(
                f"model '{cfg.name}' (provider torchvision): pretrained weights are not downloaded at run time "
                "(Aether runs offline). To fix: download the torchvision weights file on a connected machine "
                f"(torchvision.models.get_model_weights('{cfg.name}').DEFAULT.url) and pass "
                "model.weights=/path/to/file.pth (or .safetensors); or set model.pretrained=false to train from scratch."
            )
        if getattr(cfg, "grad_checkpointing", False):
            raise AetherError(f"model.grad_checkpointing=true: torchvision's '{cfg.name}' has no gradient "
                              "checkpointing switch; set model.grad_checkpointing=false (or use a timm model)")
        kwargs: Dict[str, Any] = dict(cfg.kwargs)
        if cfg.name in ("inception_v3", "googlenet"):
            kwargs.setdefault("aux_logits", False)  # the training loop expects plain logits
            kwargs.setdefault("init_weights", True)
        builder_kwargs = dict(kwargs)
        for option, kw in OPTION_KWARGS.items():
            value = getattr(cfg, option)
            if value:
                builder_kwargs[kw] = value
                kwargs[option] = value  # recorded under Aether's name: load_model_dir maps it back
        try:
            model = torchvision.models.get_model(cfg.name, weights=None, num_classes=num_classes, **builder_kwargs)
        except TypeError as exc:
            raise AetherError(f"model '{cfg.name}' (provider torchvision) does not accept these options "
                              f"{sorted(builder_kwargs)}: {exc}") from None
        head_name, head = find_head(model)
        if cfg.weights:
            self._load_weights(model, cfg.weights, head_name, cfg.name)
        info = {"provider": self.name, "name": cfg.name, "kwargs": kwargs}
        return Backbone(model=model, head=head, data_config=_data_config(cfg.name, model), info=info)

    @staticmethod
    def _load_weights(model: nn.Module, path: str, head_name: str, name: str) -> None:
        """Load a local weights file (no pickle). The classifier is kept only when its shape
        matches this dataset's classes; otherwise it stays freshly initialised."""
        sd = read_state_dict(path)
        own = model.state_dict()
        head_prefix = head_name + "."
        dropped = []
        for key in list(sd):
            if key.startswith(head_prefix) and key in own and sd[key].shape != own[key].shape:
                dropped.append(key)
                del sd[key]
            elif key.startswith(AUX_PREFIXES) and key not in own:
                del sd[key]  # auxiliary classifiers that this model was built without
        mismatched = [k for k in sd if k in own and sd[k].shape != own[k].shape]
        missing = [k for k in own if k not in sd and not k.startswith(head_prefix)
                   and not k.endswith("num_batches_tracked")]  # absent from old BatchNorm checkpoints
        unexpected = [k for k in sd if k not in own]
        if missing or unexpected or mismatched:
            detail = "; ".join(f"{label}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
                               for label, keys in (("missing", missing), ("unexpected", unexpected),
                                                   ("wrong shape", mismatched)) if keys)
            raise AetherError(f"model.weights={path}: does not fit torchvision model '{name}' ({detail})")
        model.load_state_dict(sd, strict=False)  # only the re-initialised classifier may be absent
        if dropped:
            log.info("model.weights=%s: classifier %s has another number of classes - re-initialised", path, head_name)
