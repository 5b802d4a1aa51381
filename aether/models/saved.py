"""The run's `model/` folder: safetensors weights + what is needed to rebuild and preprocess.

model/
  model.safetensors   weights of the plain (merged) network
  model.json          provider, name, kwargs, num_classes - enough to rebuild the network
  labels.json         class names in logit order
  preprocessing.json  input size, mean/std, interpolation, crop (eval transform)
  adapter/            LoRA strategies: the PEFT adapter (+ head); model.json says if it is merged
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Tuple

from torch import nn


def save_model_dir(path: Path, model: nn.Module, info: Dict[str, Any], classes: List[str],
                   preprocessing: Dict[str, Any]) -> None:
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "model.json").write_text(json.dumps({**info, "num_classes": len(classes)}, indent=2))
    (path / "labels.json").write_text(json.dumps(classes, indent=2))
    (path / "preprocessing.json").write_text(json.dumps(preprocessing, indent=2))


def load_model_dir(path: Path) -> Tuple[nn.Module, List[str], Dict[str, Any]]:
    """Rebuild the network from a `model/` folder (no pickle: safetensors + JSON only)."""
    from safetensors.torch import load_file

    from aether import registry

    info = json.loads((path / "model.json").read_text())
    classes = json.loads((path / "labels.json").read_text())
    pre = json.loads((path / "preprocessing.json").read_text())
    if info.get("features_only"):  # segmentation / detection: the provider's encoder + the task's head
        from aether.models.encoder_net import rebuild_encoder_net

        model = rebuild_encoder_net(info, len(classes), pre)
    else:
        from aether.models.backbone import model_cfg

        cfg = model_cfg(info)
        model = registry.backbones.get(cfg.provider).load()().create(cfg, len(classes)).model
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    if info.get("adapter") and not info.get("merged", True):  # LoRA kept separate: apply it now
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(path / info["adapter"]))
    return model.eval(), classes, pre
