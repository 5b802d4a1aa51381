"""Class-activation heatmaps: where in the image the model looked for the class it chose.

The `grad-cam` package (pytorch-grad-cam) computes them; Aether picks the layer. timm models
name their feature stages in `feature_info` (`layer4` of a ResNet, `stages.3` of a ConvNeXt,
`blocks.11` of a ViT); Grad-CAM wants the last one that still has a spatial grid. Its output
comes in one of three layouts, turned into (N, C, H, W):
- NCHW (CNNs) as it is;
- NHWC (Swin, some MaxViT stages): permuted;
- tokens (N, prefix + H*W, C) (ViT, DeiT): prefix tokens (class, distillation, registers) dropped,
  the rest folded back onto the patch grid; the layer is the last block's first norm, since after
  the last block only the class token reaches the head.
On small inputs an earlier stage is taken, so that the heatmap still has a grid (MIN_GRID).

Used by the run report (the worst failures and one correct image per class) and by
`aether explain run=RUN images=DIR` (aether.deploy.explain).
"""


from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from aether.errors import AetherError

METHODS = ("gradcam", "layercam", "gradcam++")


def _network(model: Any) -> Any:
    """The timm network inside a kept-separate LoRA adapter (PeftModel), else the model itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


MIN_GRID = 4  # the coarsest heatmap worth drawing: 4 x 4 cells


def target_layer(model: Any, input_side: int = 224) -> Tuple[Any, int, int]:
    """(the layer to explain, its channels, prefix tokens to drop when it emits tokens): the last
    feature stage whose grid is still MIN_GRID cells across at this input size (a 32 px input
    to a stride-32 ResNet leaves its last stage a single cell: a flat, useless heatmap)."""
    net = _network(model)
    info = getattr(net, "feature_info", None)
    if not info:
        raise AetherError(f"explain: {type(net).__name__} does not name its feature stages (timm's feature_info); "
                          "heatmaps need a timm backbone")
    stages = [dict(s) for s in info] if isinstance(info, (list, tuple)) else [
        {"module": m, "num_chs": c, "reduction": r}
        for m, c, r in zip(info.module_name(), info.channels(), info.reduction())]
    fine = [s for s in stages if input_side // int(s.get("reduction") or 1) >= MIN_GRID]
    last = (fine or stages[:1])[-1]
    layer = net.get_submodule(last["module"])
    prefix = int(getattr(net, "num_prefix_tokens", 0) or 0)
    if prefix and hasattr(layer, "norm1"):
        # a class-token ViT reads only the class token after its last block: the patch tokens
        # there get no gradient. The last block's first norm feeds its attention, through which
        # the class token reads every patch (pytorch-grad-cam's ViT recipe).
        layer = layer.norm1
    return layer, int(last["num_chs"]), prefix


def reshape_for(channels: int, prefix: int) -> Callable[[Any], Any]:
    """pytorch-grad-cam's reshape_transform: the target layer's output as (N, C, H, W)."""

    def reshape(out: Any) -> Any:
        if isinstance(out, (tuple, list)):
            out = out[0]
        if out.ndim == 3:  # tokens: (N, prefix + H*W, C)
            grid = out[:, prefix:, :]
            side = int(math.isqrt(grid.shape[1]))
            if side * side != grid.shape[1]:
                raise AetherError(f"explain: {grid.shape[1]} patch tokens do not form a square grid")
            return grid.reshape(grid.shape[0], side, side, grid.shape[2]).permute(0, 3, 1, 2)
        if out.ndim == 4 and out.shape[1] != channels and out.shape[-1] == channels:  # NHWC
            return out.permute(0, 3, 1, 2)
        return out

    return reshape


class Heatmapper:
    """Heatmaps of a classifier on preprocessed images (its eval transform's output)."""

    def __init__(self, model: Any, preprocessing: Dict[str, Any], method: str = "gradcam") -> None:
        if method not in METHODS:
            raise AetherError(f"explain: method={method!r} is not one of {', '.join(METHODS)}")
        from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, LayerCAM

        self.model = model
        self.preprocessing = preprocessing
        self.device = next(model.parameters()).device
        side = int(preprocessing["input_size"][-1])
        layer, channels, prefix = target_layer(model, side)
        cls = {"gradcam": GradCAM, "layercam": LayerCAM, "gradcam++": GradCAMPlusPlus}[method]
        self.cam = cls(model=model, target_layers=[layer], reshape_transform=reshape_for(channels, prefix))
        self.method = method

    def heatmaps(self, batch: Any, targets: Optional[Sequence[int]] = None) -> Tuple[Any, Any]:
        """(N, 3, H, W) preprocessed images -> ((N, H, W) heatmaps in [0, 1], (N, classes) probabilities).
        `targets`: the class to explain per image; None = the predicted class."""
        import torch
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        x = torch.as_tensor(batch, dtype=torch.float32).to(self.device)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                probs = torch.softmax(self.model(x).float(), dim=1).cpu().numpy()
            chosen = list(targets) if targets is not None else [int(p.argmax()) for p in probs]
            with torch.enable_grad():
                # the input asks for gradients: a frozen base (a kept-separate LoRA) would otherwise
                # give the target layer's output no gradient to weigh its channels with
                x = x.detach().clone().requires_grad_(True)
                cams = self.cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in chosen])
        finally:
            self.model.train(was_training)
        return cams, probs

    def overlay(self, image: Any, heatmap: Any) -> Any:
        """A preprocessed (3, H, W) tensor and its heatmap -> an RGB uint8 array, heat over the image."""
        import numpy as np
        from pytorch_grad_cam.utils.image import show_cam_on_image

        pre = self.preprocessing
        mean = np.asarray(pre.get("mean", (0.5, 0.5, 0.5)), dtype=np.float32)[:, None, None]
        std = np.asarray(pre.get("std", (0.5, 0.5, 0.5)), dtype=np.float32)[:, None, None]
        rgb = np.clip(np.asarray(image.detach().cpu() if hasattr(image, "detach") else image, dtype=np.float32)
                      * std + mean, 0, 1).transpose(1, 2, 0)
        return show_cam_on_image(rgb, heatmap, use_rgb=True, image_weight=0.55)


def heatmap_sheet(model: Any, preprocessing: Dict[str, Any], picks: List[Tuple[str, str, Optional[int]]],
                  out: Path, method: str = "gradcam", columns: int = 4) -> Optional[Path]:
    """The report's picture: heatmaps of `picks` [(path, caption, class index to explain or None
    for the predicted one)] in a grid; files that cannot be read are left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from aether.data.images import load_rgb
    from aether.data.transforms import eval_transform

    if not picks:
        return None
    mapper = Heatmapper(model, preprocessing, method)
    transform = eval_transform(preprocessing)
    tiles = []
    for path, caption, target in picks:
        try:
            x = transform(load_rgb(path))
        except OSError:
            continue
        cams, _ = mapper.heatmaps(torch.stack([x]), None if target is None else [target])
        tiles.append((mapper.overlay(x, cams[0]), caption))
    if not tiles:
        return None
    rows = math.ceil(len(tiles) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (img, caption) in zip(axes.flat, tiles):
        ax.imshow(img)
        ax.set_title(caption, fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
