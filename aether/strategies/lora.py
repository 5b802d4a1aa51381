"""`lora` and `qlora`: PEFT LoRA adapters on the backbone; the classifier head trains fully.

`target_modules: auto` picks targets by architecture family (`FAMILY_TARGETS`); a list of
module-name suffixes or a regex string selects layers explicitly. `aether list lora-targets
model=NAME` shows what a spec picks. The head is a PEFT `modules_to_save` module, so the saved
adapter (`model/adapter/`, PEFT format) is complete on its own and small.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

from torch import nn

from aether.errors import AetherError
from aether.models.backbone import Backbone
from aether.strategies.base import Strategy, eval_frozen_modules

# Per family: a regex over module names (fully matched).
FAMILY_TARGETS = {
    # attention qkv/proj and MLP fc layers inside transformer blocks (not patch_embed.proj)
    "transformer": r".*blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(fc1|fc2))",
    # ConvNeXt: the pointwise (1x1) layers of each block (Linear or 1x1 conv); depthwise convs
    # cannot carry LoRA (PEFT: rank must divide by groups)
    "convnext": r".*blocks\.\d+\.mlp\.(fc1|fc2)",
    # EfficientNet / MobileNet: pointwise expansion and projection convs
    "efficientnet": r".*blocks\.\d+\.\d+\.(conv_pw|conv_pwl)",
    # ResNet: the convolutions of every residual block
    "resnet": r".*layer\d\.\d+\.conv[123]",
}


def family_of(model: nn.Module) -> str:
    # encoder-and-head networks wrap a timm encoder (FeatureListNet) and name its architecture
    name = (getattr(model, "aether_arch", None) or type(model).__name__).lower()
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
    """Unknown family: every Linear and every dense (groups=1) 1x1 conv outside the head."""
    head_ids = {id(m) for m in head.modules()}
    return [name for name, m in model.named_modules()
            if id(m) not in head_ids and (isinstance(m, nn.Linear) or (
                isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1))]


def resolve_targets(model: nn.Module, head: nn.Module, spec: Union[str, List[str]]) -> List[str]:
    """Module names a spec selects: `auto`, a regex over module names, or name suffixes."""
    head_ids = {id(m) for m in head.modules()}
    if spec == "auto":
        fam = family_of(model)
        spec = _generic_targets(model, head) if fam == "generic" else FAMILY_TARGETS[fam]
    named = [(n, m) for n, m in model.named_modules() if n and id(m) not in head_ids]
    if isinstance(spec, str):
        rx = re.compile(spec)
        return [n for n, _ in named if rx.fullmatch(n)]
    return [n for n, _ in named if any(n == t or n.endswith("." + t) for t in spec)]


def module_name(model: nn.Module, module: nn.Module) -> str:
    for n, m in model.named_modules():
        if m is module:
            return n
    raise ValueError("module is not part of the model")


class Lora(Strategy):
    name = "lora"

    def _targets(self, backbone: Backbone) -> List[str]:
        o = self.options
        targets = resolve_targets(backbone.model, backbone.head, o.target_modules)
        if not targets:
            raise AetherError(
                f"strategy.target_modules={o.target_modules!r} matches no layer of {type(backbone.model).__name__}; "
                "use `auto`, layer-name suffixes (e.g. [qkv, fc1]) or a regex over module names "
                "(`aether list lora-targets model=NAME` shows the layers)"
            )
        return targets

    def apply(self, backbone: Backbone) -> nn.Module:
        from peft import LoraConfig, get_peft_model

        o = self.options
        self.targets = self._targets(backbone)
        head = module_name(backbone.model, backbone.head)
        config = LoraConfig(r=o.r, lora_alpha=o.alpha, lora_dropout=o.dropout, target_modules=self.targets,
                            modules_to_save=[head], bias="none")
        try:
            return get_peft_model(backbone.model, config)
        except ValueError as exc:
            raise AetherError(f"LoRA cannot wrap {type(backbone.model).__name__} (targets {self.targets[:3]}...): "
                              f"{exc}") from None

    def on_train_mode(self, model: nn.Module) -> None:
        eval_frozen_modules(model)  # the frozen base keeps its BatchNorm statistics too

    def export(self, model: nn.Module, model_dir: Path) -> Tuple[nn.Module, Dict[str, Any]]:
        """Always save the adapter (small, PEFT format); the main weights are merged (`merge: true`:
        serving pays nothing for LoRA) or the untouched base (`merge: false`, adapter applied at load)."""
        model.save_pretrained(str(model_dir / "adapter"))
        plain = copy.deepcopy(model)
        plain = plain.merge_and_unload() if self.options.merge else plain.unload()
        _unwrap_nested_saved(plain)
        return plain, {"adapter": "adapter", "merged": bool(self.options.merge)}

    def describe(self) -> str:
        o = self.options
        return f"{self.name} (r={o.r}, alpha={o.alpha}, {len(getattr(self, 'targets', []))} target layers)"


def _unwrap_nested_saved(model: nn.Module) -> None:
    """PEFT wraps every module whose name ends in the head's name as a trained copy (`modules_to_save`
    matches by suffix): a detection head named `head` has sub-heads `classification_head` and
    `regression_head`, wrapped again inside the head's copy. `unload` removes only the outer
    wrapper; the inner ones would leave `modules_to_save.default.` in the exported weights' keys,
    which no rebuilt network has. Each is replaced by its trained copy."""
    from peft.utils import ModulesToSaveWrapper

    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, ModulesToSaveWrapper):
                trained = list(child.modules_to_save.values())
                setattr(parent, child_name, trained[0] if len(trained) == 1 else child.original_module)


class QLora(Lora):
    """LoRA over a 4-bit base: the targeted Linear layers are stored as bitsandbytes NF4/FP4
    weights on the GPU, LoRA adapters train in `compute_dtype`. Exported merged, in full precision."""

    name = "qlora"
    device = "cuda"  # bitsandbytes quantises a Params4bit when it moves to this device

    def apply(self, backbone: Backbone) -> nn.Module:
        import torch

        if self.device == "cuda" and not torch.cuda.is_available():
            raise AetherError(
                "strategy=qlora needs a CUDA GPU: its 4-bit base weights (bitsandbytes) run on CUDA only, and "
                "this machine has none. Use strategy=lora instead (the same adapters over a full-precision base).")
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise AetherError("strategy=qlora needs bitsandbytes: pip install bitsandbytes") from None
        o = self.options
        self.targets = self._targets(backbone)
        model = backbone.model
        dtype = getattr(torch, o.compute_dtype)
        quantized = 0
        for name in self.targets:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            layer = getattr(parent, child)
            if not isinstance(layer, nn.Linear):
                continue  # convolutions stay in full precision; LoRA still wraps them
            q = bnb.nn.Linear4bit(layer.in_features, layer.out_features, bias=layer.bias is not None,
                                  compute_dtype=dtype, quant_type=o.quant_type)
            q.weight = bnb.nn.Params4bit(layer.weight.data, requires_grad=False, quant_type=o.quant_type)
            if layer.bias is not None:
                q.bias = nn.Parameter(layer.bias.data, requires_grad=False)
            # Linear4bit writes its quantisation state into the state dict (weight.absmax, ...) but
            # cannot read it back: without this hook Lightning's best/last checkpoints don't load
            q.register_load_state_dict_pre_hook(_load_prequantized)
            setattr(parent, child, q)
            quantized += 1
        if not quantized:
            raise AetherError(f"strategy=qlora: none of the {len(self.targets)} target layers is a Linear layer "
                              "(4-bit quantisation applies to Linear layers); use strategy=lora for this backbone")
        model.to(self.device)  # quantises the Params4bit weights
        return super().apply(Backbone(model, backbone.head, backbone.data_config, backbone.info))

    def export(self, model: nn.Module, model_dir: Path) -> Tuple[nn.Module, Dict[str, Any]]:
        import torch

        model.save_pretrained(str(model_dir / "adapter"))
        plain = copy.deepcopy(model)
        # dequantise the base first, then merge: the LoRA update is added in full precision
        # (merging into the 4-bit weights would re-quantise it away), and the served model is a
        # plain float network that needs neither bitsandbytes nor a GPU
        for name, module in list(plain.named_modules()):
            if _is_4bit(module):
                parent_name, _, child = name.rpartition(".")
                setattr(plain.get_submodule(parent_name) if parent_name else plain, child, _dequantized(module))
        merged = plain.merge_and_unload()
        return merged.to(torch.float32).cpu(), {"adapter": "adapter", "merged": True}


def _is_4bit(module: nn.Module) -> bool:
    return type(module).__name__ == "Linear4bit" and hasattr(module.weight, "quant_state")


def _dequantized(module: nn.Module) -> nn.Linear:
    import bitsandbytes as bnb

    w = bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state).float()
    plain = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None, device=w.device)
    plain.weight.data.copy_(w)
    if module.bias is not None:
        plain.bias.data.copy_(module.bias.data.float())
    return plain


def _load_prequantized(module: nn.Module, state_dict: Dict[str, Any], prefix: str, *args: Any) -> None:
    """Load-state-dict pre-hook of a Linear4bit: rebuild its 4-bit weight from the packed data and
    quantisation state a checkpoint holds (`weight`, `weight.absmax`, ...), exactly as saved."""
    import bitsandbytes as bnb

    stats_prefix = prefix + "weight."
    stats = {k[len(stats_prefix):]: state_dict.pop(k) for k in list(state_dict) if k.startswith(stats_prefix)}
    if not stats or prefix + "weight" not in state_dict:
        return  # a plain (unquantised) state dict: nothing to rebuild
    device = module.weight.device
    module.weight = bnb.nn.Params4bit.from_prequantized(
        data=state_dict[prefix + "weight"], quantized_stats=stats, requires_grad=False, device=device, module=module)
    state_dict[prefix + "weight"] = module.weight  # the default loader then copies it onto itself
