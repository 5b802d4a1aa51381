"""Networks of the tasks with heads over an encoder (segmentation, detection, a plugin's): a backbone provider's multi-scale encoder plus a task head.

The encoder comes from the provider `model.provider` names (`create_encoder`, see
aether.models.backbone), so plugins, `model.pretrained`/`weights`, `drop_path_rate` and
`grad_checkpointing` apply as for classifiers; `model.drop_rate` is channel dropout on the
features the head reads (the counterpart of dropout before a classifier).

`EncoderNet.encoder` is the backbone every strategy acts on; `EncoderNet.head` (decoder, FPN,
detector) is what `Backbone.head` points to, so it trains under every strategy: LoRA adapts the
encoder and keeps the head fully trainable (PEFT `modules_to_save`), linear probe freezes the
encoder, gradual unfreezing opens the encoder stages top-down after the head.
"""

from __future__ import annotations

from typing import Any, Dict, List

from torch import nn

from aether.config.schema import ModelCfg
from aether.errors import AetherError
from aether.models.backbone import Backbone, Encoder


class EncoderNet(nn.Module):
    def __init__(self, encoder: nn.Module, head: nn.Module, arch: str, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.aether_arch = arch  # read by the LoRA target picker (family of the model)
        # channel dropout (whole feature maps: neighbouring pixels of one map are too correlated
        # for element-wise dropout to regularise); no parameters, so saved weights do not change
        self.feature_drop = nn.Dropout2d(drop_rate) if drop_rate else nn.Identity()

    def features(self, x: Any) -> List[Any]:
        return [self.feature_drop(f) for f in self.encoder(x)]

    def forward(self, x: Any, *args: Any) -> Any:
        # the head is called as a module (never through its attributes) so that PEFT's
        # modules_to_save copy of it is the one that runs; it reads the features through `features`
        return self.head(x, self.features, *args)

    def aether_layer_map(self) -> Dict[str, int]:
        """Parameter name -> depth: the encoder's top-level stages in order, then the head."""
        stages = {name: i for i, (name, _) in enumerate(self.encoder.named_children())}
        top = len(stages)
        out = {}
        for n, _ in self.named_parameters():
            parts = n.split(".")
            out[n] = stages.get(parts[1], top) if parts[0] == "encoder" else top
        return out


def create_encoder(cfg: ModelCfg) -> Encoder:
    """The multi-scale encoder of `cfg` from its backbone provider (the registry's `model.provider`)."""
    from aether import registry

    provider = registry.backbones.get(cfg.provider).load()()
    if not hasattr(provider, "create_encoder"):
        raise AetherError(f"model.provider={cfg.provider}: this backbone provider builds classifiers only (it has no "
                          "create_encoder); segmentation and detection need a multi-scale feature encoder - use "
                          "model.provider=timm, or a provider that implements create_encoder(cfg) -> Encoder")
    encoder = provider.create_encoder(cfg)
    if not encoder.channels or len(encoder.channels) != len(encoder.reductions):
        raise AetherError(f"model.provider={cfg.provider}: create_encoder('{cfg.name}') returned {len(encoder.channels)} "
                          f"channel counts for {len(encoder.reductions)} reductions; expected one of each per feature map")
    return encoder


def build_encoder_net(cfg: ModelCfg, task: str, options: Dict[str, Any], num_classes: int, pre: Dict[str, Any],
                encoder: Encoder) -> Backbone:
    """The task's network: `encoder` + the head the task registered (aether.models.heads), as the
    Backbone strategies act on. `info` is what rebuild_encoder_net needs (with the task's own fields,
    added by the task's model_info when the run is saved)."""
    from aether.models.heads import head_builder

    head = head_builder(task)(options, encoder, num_classes, pre)
    info = {**encoder.info, "features_only": True}  # "features_only": load_model_dir rebuilds an encoder network
    return Backbone(EncoderNet(encoder.model, head, cfg.name, cfg.drop_rate), head, encoder.data_config, info)


def rebuild_encoder_net(info: Dict[str, Any], num_classes: int, pre: Dict[str, Any]) -> EncoderNet:
    """The untrained network a saved encoder-network `model/` folder describes (weights loaded by the caller)."""
    from aether.models.heads import head_builder
    from aether.models.backbone import model_cfg

    encoder = create_encoder(model_cfg(info))
    head = head_builder(info["task"])(info["task_options"], encoder, num_classes, pre)
    return EncoderNet(encoder.model, head, info["name"])
