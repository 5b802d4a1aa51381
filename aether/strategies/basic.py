"""`full` and `linear_probe`."""

from __future__ import annotations

from torch import nn

from aether.models.backbone import Backbone
from aether.strategies.base import Strategy


class Full(Strategy):
    name = "full"


class LinearProbe(Strategy):
    """Backbone frozen - weights and BatchNorm running statistics - only the head trains."""

    name = "linear_probe"

    def apply(self, backbone: Backbone) -> nn.Module:
        model = backbone.model
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
