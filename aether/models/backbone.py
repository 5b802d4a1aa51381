"""What a backbone provider returns, and reading weight files safely.

A backbone provider (registered in `aether.registry.backbones`, e.g. `timm`, or a plugin's) is a
class with

- `create(cfg: ModelCfg, num_classes) -> Backbone`: a classifier (classification, multilabel);
- `create_encoder(cfg: ModelCfg) -> Encoder`: a multi-scale feature encoder (segmentation,
  detection), optional: a provider without it builds classifiers only.

Both apply `model.pretrained` / `model.weights` (offline rules: aether.models.weights),
`model.drop_path_rate`, `model.grad_checkpointing` and `model.kwargs` as the provider's models
allow, and return `info` that the same method rebuilds the network from (`model/model.json`).
`model.drop_rate` is the dropout before the classifier in a Backbone; for an Encoder the
network applies it to the features its head reads (aether.models.encoder_net), so providers ignore it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List

import torch
from torch import nn

from aether.errors import AetherError


@dataclass
class Backbone:
    model: nn.Module  # image batch -> class logits
    head: nn.Module  # the classifier layer(s), re-initialised for this dataset's classes
    data_config: Dict[str, Any]  # timm-style: input_size, mean, std, interpolation, crop_pct
    info: Dict[str, Any] = field(default_factory=dict)  # provider, name, kwargs: enough to rebuild


@dataclass
class Encoder:
    model: nn.Module  # image batch (N, 3, H, W) -> list of feature maps (N, C_i, H / r_i, W / r_i), finest first
    channels: List[int]  # C_i of each map
    reductions: List[int]  # r_i: each map's stride relative to the input (non-decreasing)
    data_config: Dict[str, Any]  # timm-style, as in Backbone
    info: Dict[str, Any] = field(default_factory=dict)  # provider, name, kwargs: `create_encoder` rebuilds it


def read_state_dict(path: str, what: str = "") -> Dict[str, torch.Tensor]:
    """Read weights from .safetensors or a torch state-dict file without executing pickle code.
    `what` names the file in errors (default `model.weights=PATH`)."""
    what = what or f"model.weights={path}"
    p = Path(path).expanduser()
    if not p.is_file():
        raise AetherError(f"{what}: no such file")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: Any = load_file(str(p))
        else:
            sd = torch.load(str(p), map_location="cpu", weights_only=True)  # no pickle execution
    except Exception as exc:
        raise AetherError(
            f"{what}: cannot read it as safetensors or a plain state dict ({exc}); "
            "files that need pickle to load are refused - convert them to .safetensors"
        ) from None
    for key in ("state_dict", "model", "module"):  # common wrappers (Lightning, DeiT, DDP)
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise AetherError(f"{what}: expected a mapping of parameter names to tensors")
    for prefix in ("model.", "module."):  # Lightning module attribute / DDP wrapper
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def model_cfg(info: Dict[str, Any]) -> Any:
    """The ModelCfg that rebuilds a saved network, untrained, from model.json's provider, name and
    kwargs (where the provider recorded drop_rate / drop_path_rate under Aether's own names)."""
    from aether.config.schema import ModelCfg

    kwargs = dict(info.get("kwargs", {}))
    return ModelCfg(provider=info.get("provider", "timm"), name=info["name"], pretrained=False,
                    drop_rate=kwargs.pop("drop_rate", 0.0), drop_path_rate=kwargs.pop("drop_path_rate", 0.0),
                    kwargs=kwargs)
