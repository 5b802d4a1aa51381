"""`lora`: PEFT LoRA adapters on the backbone's linear / pointwise layers; the head trains fully.

`target_modules: auto` picks targets by architecture family (see `auto_targets`); a list of
module-name suffixes or a regex string is passed to PEFT as given.
"""

from __future__ import annotations

import copy
import re
from typing import List, Union

from torch import nn

from aether.errors import AetherError
from aether.models.backbone import Backbone
from aether.strategies.base import Strategy

# Per family: a regex over module names (PEFT full-matches a string target_modules).
FAMILY_TARGETS = {
    # attention qkv/proj and MLP fc layers inside transformer blocks (not patch_embed.proj)
    "transformer": r".*blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(fc1|fc2))",
    # ConvNeXt: the pointwise (1x1) layers of each block, implemented as Linear or 1x1 conv
    "convnext": r".*blocks\.\d+\.mlp\.(fc1|fc2)",
    # EfficientNet / MobileNet: pointwise expansion and projection convs
    "efficientnet": r".*blocks\.\d+\.\d+\.(conv_pw|conv_pwl)",
    # ResNet: the convolutions of every residual block
    "resnet": r".*layer\d\.\d+\.conv[123]",
}


def family_of(model: nn.Module) -> str:
    name = type(model).__name__.lower()
    if any(k in name for k in ("visiontransformer", "vit", "deit", "swin", "eva", "beit")):
        return "transformer"
    if "convnext" in name:
        return "convnext"
    if any(k in name for k in ("efficientnet", "mobilenet")):
        return "efficientnet"
    if "resnet" in name:
        return "resnet"
    return "generic"


def _generic_targets(model: nn.Module, head: nn.Module) -> List[str]:
    head_ids = {id(m) for m in head.modules()}
    names = []
    for name, m in model.named_modules():
        if id(m) in head_ids:
            continue
        if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1):
            names.append(name)
    return names


def auto_targets(model: nn.Module, head: nn.Module) -> Union[str, List[str]]:
    fam = family_of(model)
    if fam == "generic":
        return _generic_targets(model, head)
    return FAMILY_TARGETS[fam]


def resolve_targets(model: nn.Module, head: nn.Module, spec: Union[str, List[str]]) -> List[str]:
    """Module names the spec selects (what `auto` picks, or what a user's names/regex pick)."""
    target = auto_targets(model, head) if spec == "auto" else spec
    names = [n for n, _ in model.named_modules() if n]
    if isinstance(target, str):
        rx = re.compile(target)
        return [n for n in names if rx.fullmatch(n)]
    return [n for n in names if any(n == t or n.endswith("." + t) for t in target)]


class Lora(Strategy):
    name = "lora"

    def apply(self, backbone: Backbone) -> nn.Module:
        from peft import LoraConfig, get_peft_model

        o = self.options
        model, head = backbone.model, backbone.head
        targets = resolve_targets(model, head, o.target_modules)
        if not targets:
            raise AetherError(
                f"strategy.target_modules={o.target_modules!r} matches no layer of {type(model).__name__}; "
                "use `auto`, layer-name suffixes (e.g. [qkv, fc1]) or a regex over module names"
            )
        self.targets = targets
        config = LoraConfig(r=o.r, lora_alpha=o.alpha, lora_dropout=o.dropout, target_modules=targets, bias="none")
        try:
            peft_model = get_peft_model(model, config)
        except ValueError as exc:
            raise AetherError(f"LoRA cannot wrap {type(model).__name__} with targets {targets[:4]}...: {exc}") from None
        for p in head.parameters():  # the new classifier trains fully
            p.requires_grad_(True)
        return peft_model

    def export_model(self, model: nn.Module) -> nn.Module:
        if not self.options.merge:
            return model
        return copy.deepcopy(model).merge_and_unload()  # plain timm module: serving pays nothing for LoRA

    def describe(self) -> str:
        o = self.options
        return f"lora (r={o.r}, alpha={o.alpha}, {len(getattr(self, 'targets', []))} target layers)"
