"""`full` (optionally with layer-wise LR decay) and `linear_probe`."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from torch import nn

from aether.models.backbone import Backbone
from aether.strategies.base import Strategy


class Full(Strategy):
    """Every parameter trains. With `layer_decay`, deeper-to-shallower layers get geometrically
    smaller learning rates (LLRD, timm/BEiT grouping): the head at the full LR, the stem at
    `layer_decay ** depth` of it."""

    name = "full"

    def param_groups(self, model: nn.Module, weight_decay: float) -> List[Dict[str, Any]]:
        if not self.options.layer_decay:
            return super().param_groups(model, weight_decay)
        from timm.optim import param_groups_layer_decay

        no_decay = getattr(model, "no_weight_decay", lambda: set())()
        return param_groups_layer_decay(model, weight_decay=weight_decay, layer_decay=self.options.layer_decay,
                                        no_weight_decay_list=no_decay)

    def describe(self) -> str:
        return f"full (layer_decay={self.options.layer_decay})" if self.options.layer_decay else "full"


class LinearProbe(Strategy):
    """Backbone frozen - weights and BatchNorm running statistics - only the head trains. With
    `head_init: logreg` the head starts as the logistic regression on the frozen features of the
    training split (aether.strategies.head_init), so the epochs refine a converged probe."""

    name = "linear_probe"
    head_init_result: Optional[Dict[str, Any]] = None  # what the closed-form init chose and measured

    def apply(self, backbone: Backbone) -> nn.Module:
        model = backbone.model
        self.head = backbone.head
        self._head_ids = {id(m) for m in backbone.head.modules()}
        for p in model.parameters():
            p.requires_grad_(False)
        for p in backbone.head.parameters():
            p.requires_grad_(True)
        return model

    def on_train_mode(self, model: nn.Module) -> None:
        for m in model.modules():
            if id(m) not in self._head_ids and m is not model:
                m.eval()  # frozen features: no BatchNorm statistics updates, no dropout

    def callbacks(self) -> List[Any]:
        if self.options.head_init != "logreg":
            return []
        from aether.strategies.head_init import LogisticHeadInit

        return [LogisticHeadInit(self)]

    def report(self) -> Dict[str, Any]:
        return {"head_init": self.head_init_result or self.options.head_init}

    def describe(self) -> str:
        return f"linear_probe (head_init={self.options.head_init})"
