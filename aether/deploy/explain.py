"""Class-activation heatmaps: where in the image the model looked for the class it chose.

The `grad-cam` package (pytorch-grad-cam) computes them; Aether picks the layer. timm models
name their last feature stage in `feature_info` (`layer4` of a ResNet, `stages.3` of a ConvNeXt,
`blocks.11` of a ViT), which is the layer Grad-CAM wants for every family: the last one that still
has a spatial grid. Its output comes in one of three layouts, turned into (N, C, H, W):
- NCHW (CNNs) as it is;
- NHWC (Swin, some MaxViT stages): permuted;
- tokens (N, prefix + H*W, C) (ViT, DeiT): prefix tokens (class, distillation, registers) dropped,
  the rest folded back onto the patch grid; the layer is the last block's first norm, since after
  the last block only the class token reaches the head.
On small inputs an earlier stage is taken, so that the heatmap still has a grid (MIN_GRID).

Used by `aether explain run=RUN images=DIR` and by the run report (the worst failures and one
correct image per class).
"""

from __future__ import annotations

import csv
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


class Explainer:
    """Heatmaps for a model of a `model/` folder, through the same checks and eval transform as
    prediction (`aether.deploy.predictor.Predictor`)."""

    def __init__(self, predictor: Any, method: str = "gradcam") -> None:
        if method not in METHODS:
            raise AetherError(f"explain: method={method!r} is not one of {', '.join(METHODS)}")
        from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, LayerCAM

        self.predictor = predictor
        side = int(predictor.pre.preprocessing["input_size"][-1])
        layer, channels, prefix = target_layer(predictor.model, side)
        cls = {"gradcam": GradCAM, "layercam": LayerCAM, "gradcam++": GradCAMPlusPlus}[method]
        self.cam = cls(model=predictor.model, target_layers=[layer], reshape_transform=reshape_for(channels, prefix))
        self.method = method

    def heatmaps(self, batch: Any, targets: Optional[Sequence[int]] = None) -> Tuple[Any, Any]:
        """(N, 3, H, W) preprocessed images -> ((N, H, W) heatmaps in [0, 1], (N, classes) probabilities).
        `targets`: the class to explain per image; None = the predicted class."""
        import torch
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        x = torch.as_tensor(batch, dtype=torch.float32).to(self.predictor.device)
        probs = self.predictor.probabilities(x)
        chosen = list(targets) if targets is not None else [int(p.argmax()) for p in probs]
        with torch.enable_grad():
            # the input asks for gradients: a frozen base (a kept-separate LoRA) would otherwise
            # give the target layer's output no gradient to weigh its channels with
            x = x.detach().requires_grad_(True)
            cams = self.cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in chosen])
        return cams, probs

    def overlay(self, image: Any, heatmap: Any) -> Any:
        """A preprocessed (3, H, W) tensor and its heatmap -> an RGB uint8 array, heat over the image."""
        import numpy as np
        from pytorch_grad_cam.utils.image import show_cam_on_image

        pre = self.predictor.pre.preprocessing
        mean = np.asarray(pre.get("mean", (0.5, 0.5, 0.5)), dtype=np.float32)[:, None, None]
        std = np.asarray(pre.get("std", (0.5, 0.5, 0.5)), dtype=np.float32)[:, None, None]
        rgb = np.clip(np.asarray(image, dtype=np.float32) * std + mean, 0, 1).transpose(1, 2, 0)
        return show_cam_on_image(rgb, heatmap, use_rgb=True, image_weight=0.55)


def explain_images(run: str, images: List[str], out: Optional[str] = None, method: str = "gradcam",
                   device: Optional[str] = None, batch_size: int = 16) -> Dict[str, Any]:
    """`aether explain`: a heatmap PNG per image (predicted class, score in explanations.csv)
    under `out` (default RUN/explain/). Unusable files are listed with the reason, never raised."""
    from PIL import Image

    from aether.deploy.model_dir import check_run
    from aether.deploy.predict import collect, output_folder, shown
    from aether.deploy.predictor import ImageLimits, Predictor

    run_dir = check_run(run)
    model_dir = run_dir / "model"
    info = _model_info(model_dir)
    if info.get("features_only"):
        raise AetherError(f"explain: {shown(str(run_dir))} is a {info.get('task', 'dense')} run; heatmaps explain "
                          "image classifiers (classification, multilabel)")
    out_dir = output_folder(out, run_dir) if out else run_dir / "explain"
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = collect(images)
    predictor = Predictor(model_dir, device=device, limits=ImageLimits.from_run(run_dir))
    explainer = Explainer(predictor, method)
    rows: List[List[Any]] = []
    failed: List[Dict[str, str]] = []
    from aether.deploy.predictor import BadImage

    for start in range(0, len(paths), batch_size):
        chunk, tensors = [], []
        for p in paths[start:start + batch_size]:
            try:
                tensors.append(predictor.pre.load(p))
                chunk.append(p)
            except BadImage as bad:
                failed.append({"path": p, "reason": bad.code, "detail": bad.detail})
        if not tensors:
            continue
        import torch

        batch = torch.stack(tensors)
        cams, probs = explainer.heatmaps(batch)
        for n, (p, cam, row) in enumerate(zip(chunk, cams, probs)):
            index = start + n
            name = f"{index:05d}_{shown(Path(p).stem)}.png"
            Image.fromarray(explainer.overlay(batch[n], cam)).save(out_dir / name)
            label = int(row.argmax())
            rows.append([p, predictor.classes[label], round(float(row[label]), 6), name])
    with (out_dir / "explanations.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "predicted", "score", "heatmap"])
        w.writerows(rows)
        w.writerows([[x["path"], "", "", f"error: {x['reason']}: {x['detail']}"] for x in failed])
    return {"out_dir": shown(str(out_dir)), "method": method, "num_files": len(paths), "num_explained": len(rows),
            "failed": failed}


def _model_info(model_dir: Path) -> Dict[str, Any]:
    import json

    try:
        return json.loads((model_dir / "model.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise AetherError(f"{model_dir}/model.json: cannot read it ({e}); expected a finished run's model/") from None


def explanation_sheet(run_dir: Path, picks: List[Tuple[str, str, str]], out: Path, method: str = "gradcam",
                      columns: int = 4) -> Optional[Path]:
    """The report's picture: heatmaps of `picks` [(path, caption, class to explain)], in a grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from aether.deploy.predictor import BadImage, Predictor

    if not picks:
        return None
    predictor = Predictor(run_dir / "model", device="cpu")
    explainer = Explainer(predictor, method)
    tiles = []
    for path, caption, target in picks:
        try:
            x = predictor.pre.load(path)
        except BadImage:
            continue
        index = predictor.classes.index(target) if target in predictor.classes else None
        cams, _ = explainer.heatmaps(torch.stack([x]), None if index is None else [index])
        tiles.append((explainer.overlay(x, cams[0]), caption))
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
