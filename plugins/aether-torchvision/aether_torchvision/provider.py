"""The `torchvision` backbone provider: torchvision classification models, built offline.

Implements Aether's provider interface: ``create(cfg: ModelCfg, num_classes) -> Backbone`` (a
classifier) and ``create_encoder(cfg: ModelCfg) -> Encoder`` (the same model's convolutional body
as a multi-scale feature encoder, for segmentation and detection). ``info`` holds everything
`aether.models.saved.load_model_dir` needs to rebuild the network (provider, name, kwargs), so
saved runs reload without this module knowing about them.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Tuple

import torch
import torchvision
from torch import nn

from aether.config.schema import ModelCfg
from aether.errors import AetherError
from aether.models.backbone import Backbone, Encoder, read_state_dict

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
        model, kwargs, head_name = self._build(cfg, num_classes)
        if getattr(cfg, "grad_checkpointing", False):
            raise AetherError(f"model.grad_checkpointing=true: torchvision's '{cfg.name}' classifier has no gradient "
                              "checkpointing switch; set model.grad_checkpointing=false (or use a timm model)")
        info = {"provider": self.name, "name": cfg.name, "kwargs": kwargs}
        return Backbone(model=model, head=model.get_submodule(head_name), data_config=_data_config(cfg.name, model),
                        info=info)

    def create_encoder(self, cfg: ModelCfg) -> Encoder:
        """The classifier's convolutional body, stage by stage (its pooling and classifier dropped),
        returning the last feature map of each stride. A weights file of the classifier (any
        number of classes) loads into it; `model.grad_checkpointing` recomputes the stages'
        activations in the backward pass (StageFeatures)."""
        # drop_rate is the encoder network's feature dropout (aether.models.encoder_net), not the classifier's
        model, kwargs, head_name = self._build(cfg.model_copy(update={"drop_rate": 0.0}), None)
        data_config = _data_config(cfg.name, model)
        encoder = StageFeatures.of(model, head_name.split(".")[0], cfg.name)
        encoder.grad_checkpointing = bool(getattr(cfg, "grad_checkpointing", False))
        info = {"provider": self.name, "name": cfg.name, "kwargs": kwargs}
        return Encoder(model=encoder, channels=encoder.channels, reductions=encoder.reductions,
                       data_config=data_config, info=info)

    def _build(self, cfg: ModelCfg, num_classes: Any) -> Tuple[nn.Module, Dict[str, Any], str]:
        """(model, kwargs recorded in model.json, qualified name of its classifier layer), with the
        weights of `model.weights` loaded; num_classes None keeps the model's own classifier size."""
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
        if num_classes is not None:
            builder_kwargs["num_classes"] = num_classes
        try:
            model = torchvision.models.get_model(cfg.name, weights=None, **builder_kwargs)
        except TypeError as exc:
            raise AetherError(f"model '{cfg.name}' (provider torchvision) does not accept these options "
                              f"{sorted(builder_kwargs)}: {exc}") from None
        head_name, _ = find_head(model)
        if cfg.weights:
            self._load_weights(model, cfg.weights, head_name, cfg.name)
        return model, kwargs, head_name

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


# Children that end the convolutional body: global pooling, flattening, dropout, the classifier.
BODY_ENDS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten, nn.Dropout, nn.Linear)
PROBE_SIDE = 256  # side of the dummy image that measures each stage's stride (valid-padding nets shrink a little)


class StageFeatures(nn.Module):
    """A torchvision classifier's body run stage by stage (its top-level children in order, a
    Sequential that spans several strides opened into its elements, named `features_3` like
    timm's feature extractors), returning the output of the last stage of each stride, finest
    first. With `grad_checkpointing` the inner stages are recomputed in the backward pass
    (non-reentrant: LoRA adapters behind frozen stages still get gradients)."""

    def __init__(self, stages: List[Tuple[str, nn.Module]], taps: List[int], channels: List[int],
                 reductions: List[int]) -> None:
        super().__init__()
        for name, module in stages:
            self.add_module(name, module)
        self.taps, self.channels, self.reductions = taps, channels, reductions
        self.grad_checkpointing = False

    @classmethod
    def of(cls, model: nn.Module, head_attr: str, name: str) -> "StageFeatures":
        children: List[Tuple[str, nn.Module]] = []
        for child_name, child in model.named_children():
            if child_name == head_attr or isinstance(child, BODY_ENDS):
                break
            children.append((child_name, child))
        opened = [(f"{n}_{k}", m) if isinstance(c, nn.Sequential) else (n, c)
                  for n, c in children for k, m in (c.named_children() if isinstance(c, nn.Sequential) else [(n, c)])]
        shapes = _probe([m for _, m in opened], name)
        strides = [_stride(s[-1]) for s in shapes]
        # a Sequential whose elements all end at one stride stays one stage (ResNet's layer1)
        stages: List[Tuple[str, nn.Module]] = []
        stage_strides: List[int] = []
        shape_of: List[torch.Size] = []
        i = 0
        for n, c in children:
            k = len(c) if isinstance(c, nn.Sequential) else 1
            if isinstance(c, nn.Sequential) and len(set(strides[i:i + k])) > 1:
                stages += opened[i:i + k]
                stage_strides += strides[i:i + k]
                shape_of += shapes[i:i + k]
            else:
                stages.append((n, c))
                stage_strides.append(strides[i + k - 1])
                shape_of.append(shapes[i + k - 1])
            i += k
        taps = [j for j, r in enumerate(stage_strides) if j + 1 == len(stage_strides) or stage_strides[j + 1] != r]
        return cls(stages, taps, [int(shape_of[j][1]) for j in taps], [stage_strides[j] for j in taps])

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        from torch.utils.checkpoint import checkpoint

        out = []
        modules = list(self.children())
        for j, module in enumerate(modules):
            # the first stage needs the input's gradient, the last may be in-place, an in-place
            # module on its own would modify the tensor saved for recomputation: not checkpointed
            skip = j in (0, len(modules) - 1) or getattr(module, "inplace", False) is True
            if self.grad_checkpointing and self.training and not skip:
                x = checkpoint(module, x, use_reentrant=False)
            else:
                x = module(x)
            if j in self.taps:
                out.append(x)
        return out


def _probe(modules: List[nn.Module], name: str) -> List[torch.Size]:
    """Output shape of each module run in sequence on a dummy image; raises when the body is not
    a plain sequence of convolutional stages with (N, C, H, W) outputs."""
    shapes = []
    x = torch.zeros(1, 3, PROBE_SIDE, PROBE_SIDE)
    modules_mode = [(m, m.training) for m in modules]
    try:
        with torch.no_grad():
            for m in modules:
                m.eval()
                x = m(x)
                if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[-1] != x.shape[-2]:
                    raise TypeError(f"a stage returned {tuple(x.shape) if isinstance(x, torch.Tensor) else type(x)}")
                shapes.append(x.shape)
    except (RuntimeError, TypeError, AssertionError, ValueError) as exc:  # shape errors, torch._assert
        raise AetherError(f"model.name={name} (provider torchvision): its body is not a sequence of convolutional "
                          f"stages with (N, C, H, W) outputs ({str(exc).splitlines()[0][:160]}), so segmentation and "
                          "detection cannot read multi-scale features from it; choose a CNN such as resnet18, "
                          "mobilenet_v3_large, efficientnet_b0 or convnext_tiny") from None
    finally:
        for m, mode in modules_mode:
            m.train(mode)
    if not shapes:
        raise AetherError(f"model.name={name} (provider torchvision): no convolutional stage found before its classifier")
    return shapes


def _stride(side: int) -> int:
    """The power-of-two stride a map of `side` pixels (of the PROBE_SIDE input) has."""
    import math

    return 2 ** max(0, round(math.log2(PROBE_SIDE / max(1, side))))
