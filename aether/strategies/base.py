"""The strategy interface every fine-tune strategy implements (registered in aether.registry)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Tuple

from torch import nn

from aether.models.backbone import Backbone


def count_params(model: nn.Module) -> Dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": int(total), "trainable": int(trainable)}


def decay_groups(named_params, weight_decay: float, lr_scale: float = 1.0) -> List[Dict[str, Any]]:
    """Split trainable parameters into decay / no-decay groups (biases and norm weights - 1-D
    tensors - get no weight decay, as in timm)."""
    decay, no_decay = [], []
    for _, p in named_params:
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay, "lr_scale": lr_scale})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "lr_scale": lr_scale})
    return groups


def layer_map(model: nn.Module) -> Dict[str, int]:
    """Parameter name -> depth index (0 = stem ... max = head), from timm's group_matcher when
    the model has one; timm's fallback grouping otherwise."""
    from timm.models import group_parameters
    from timm.optim._param_groups import auto_group_layers

    if hasattr(model, "aether_layer_map"):  # encoder-and-head networks: encoder stages, then decoder/head
        return model.aether_layer_map()
    if hasattr(model, "group_matcher"):
        return group_parameters(model, model.group_matcher(coarse=False), reverse=True)
    return auto_group_layers(model)


def eval_frozen_modules(model: nn.Module) -> None:
    """Put modules whose own parameters are all frozen in eval mode, so frozen BatchNorm layers
    keep their running statistics (a frozen layer must not drift)."""
    for m in model.modules():
        own = list(m.parameters(recurse=False))
        if own and not any(p.requires_grad for p in own):
            m.eval()


class Strategy:
    """Decides what trains. Subclasses override `apply` and, when needed, the other hooks."""

    name = "base"

    def __init__(self, options: Any) -> None:
        self.options = options

    def apply(self, backbone: Backbone) -> nn.Module:
        """Freeze / wrap the backbone's model; return the module that trains."""
        return backbone.model

    def param_groups(self, model: nn.Module, weight_decay: float) -> List[Dict[str, Any]]:
        return decay_groups(model.named_parameters(), weight_decay)

    def on_train_mode(self, model: nn.Module) -> None:
        """Called whenever the model is put in training mode (e.g. to keep frozen BatchNorm in eval)."""

    def callbacks(self) -> List[Any]:
        """Lightning callbacks the strategy needs (gradual unfreezing is one)."""
        return []

    def export(self, model: nn.Module, model_dir: Path) -> Tuple[nn.Module, Dict[str, Any]]:
        """The plain module to save as the run's model (LoRA merges here), plus entries for
        model.json; may write extra files (an adapter) into `model_dir`."""
        return model, {}

    def report(self) -> Dict[str, Any]:
        """What the strategy decided during the run, for metrics.json's `strategy` section."""
        return {}

    def describe(self) -> str:
        return self.name
