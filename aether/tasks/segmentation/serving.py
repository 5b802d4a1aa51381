"""Serving task=segmentation: class-id masks, back at each input's own size.

    answer   {"width", "height", "areas": {class: {"pixels", "fraction"}},
              "mask_png": base64 PNG, original size, pixel value = class index}
    predict  masks/<n>_<stem>.png beside predictions.csv (the answer names it instead of the base64);
    CSV      path, mask, width, height, one `pixels:<class>` column per class, error
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from aether.tasks.codec import Agreement, Codec, Size


class SegmentationCodec(Codec):
    task = "segmentation"
    metrics = ("miou", "dice", "pixel_accuracy")
    packages = True  # per-pixel logits: agreement of the argmax per pixel, mIoU

    def __init__(self, pre: Any, options: Dict[str, Any]) -> None:
        super().__init__(pre, options)
        from aether.tasks.segmentation.data import mask_transforms

        p = pre.preprocessing
        self.transform = mask_transforms(p["input_size"][-1], None, p["mean"], p["std"])  # the test split's

    @classmethod
    def onnx_output_shape(cls, num_classes: int, input_shape: Sequence[int]) -> List[Any]:
        return ["batch", num_classes, *input_shape[1:]]  # the decoder's per-pixel logits

    def load(self, path: str) -> Tuple[Any, Size]:
        import torch

        x, size = self.decoded(path, self.transform)
        return x.as_subclass(torch.Tensor), size

    def forward(self, model: Any, x: Any) -> Any:
        import torch

        return model(x).argmax(1).to(dtype=torch.uint8).cpu().numpy()

    @staticmethod
    def from_logits(logits: Any) -> Any:
        import numpy as np

        return logits.argmax(1).astype(np.uint8)

    def example(self, path: str, target: Any) -> Tuple[Any, Any]:
        """The image and its mask through the test split's joint transform (the task's Dataset)."""
        from aether.data.items import Item
        from aether.tasks.segmentation.data import SegmentationDataset

        return SegmentationDataset([Item(path, target)], self.transform)[0]

    def agreement(self, saved: Dict[str, Any]) -> Agreement:
        ignore = saved.get("ignore_index")
        return PixelAgreement(len(self.classes), ignore if isinstance(ignore, int) else None)

    def decode(self, rows: Any, sizes: Sequence[Size]) -> List[Dict[str, Any]]:
        import numpy as np
        from PIL import Image

        out = []
        for mask, (w, h) in zip(rows, sizes):
            # class ids: nearest neighbour back to the original size (the eval transform squashed it)
            full = Image.fromarray(np.asarray(mask, dtype=np.uint8), mode="L").resize((w, h), Image.NEAREST)
            counts = np.bincount(np.asarray(full).ravel(), minlength=len(self.classes))
            buf = io.BytesIO()
            full.save(buf, format="PNG")
            out.append({"width": w, "height": h,
                        "areas": {c: {"pixels": int(counts[i]), "fraction": round(float(counts[i]) / (w * h), 6)}
                                  for i, c in enumerate(self.classes)},
                        "mask_png": base64.b64encode(buf.getvalue()).decode("ascii")})
        return out

    def csv_columns(self) -> List[str]:
        return ["mask", "width", "height", *(f"pixels:{c}" for c in self.classes)]

    def csv_row(self, answer: Dict[str, Any]) -> List[Any]:
        pixels = [answer["areas"][c]["pixels"] for c in self.classes]
        return [answer["mask"], answer["width"], answer["height"], *pixels]

    def write_files(self, out_dir: Path, answers: List[Dict[str, Any]], names: List[str]) -> None:
        """Each mask PNG to masks/; the answer keeps its file's name (relative to out_dir)."""
        (out_dir / "masks").mkdir(exist_ok=True)
        for answer, name in zip(answers, names):
            rel = f"masks/{name}.png"
            (out_dir / rel).write_bytes(base64.b64decode(answer.pop("mask_png")))
            answer["mask"] = rel


class PixelAgreement(Agreement):
    """The same class id for each pixel, and the test mIoU of each model as the run computed it
    (torchmetrics' Jaccard index per class with the run's ignore_index, averaged over the classes
    present in the test masks); targets: (H, W) class-id masks."""

    measures = "pixels"
    metric = "miou"

    def __init__(self, k: int, ignore_index: Any) -> None:
        import torch
        from torchmetrics.classification import MulticlassJaccardIndex

        self.k = k
        self.iou = [MulticlassJaccardIndex(k, average=None, ignore_index=ignore_index) for _ in range(2)]
        self.support = torch.zeros(k, dtype=torch.long)
        self.same = self.pixels = 0

    def update(self, ref: Any, got: Any, targets: List[Any]) -> None:
        import numpy as np
        import torch

        from aether.tasks.segmentation.task import pixel_support

        ref, got, y = np.asarray(ref), np.asarray(got), torch.stack([torch.as_tensor(t) for t in targets]).long()
        self.same += int((ref == got).sum())
        self.pixels += int(ref.size)
        for metric, masks in zip(self.iou, (ref, got)):
            metric.update(torch.from_numpy(masks.astype(np.int64)), y)
        self.support += pixel_support(y, self.k)

    def scores(self) -> Tuple[float, float, float]:
        from aether.tasks.segmentation.task import mean_over_present

        pt, ex = (mean_over_present(m.compute(), self.support) for m in self.iou)
        return self.same / max(1, self.pixels), pt, ex


CODEC = SegmentationCodec
