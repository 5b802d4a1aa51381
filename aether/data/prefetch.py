"""uint8 batches become model inputs on the device (the timm "prefetcher" idea, in Lightning).

The cached loaders (aether.data.cache) collate uint8 images: a quarter of the bytes of float32
to pin and copy, and no per-image float work in the workers. After the copy to the device
(LightningDataModule.on_after_batch_transfer), this module scales to [0, 1], normalises with
the backbone's mean/std, applies random erasing to training batches (it needs normalised
input, so it cannot run before the cache) and, where it helps, switches to channels_last.

The arithmetic is exactly torchvision's ToTensor + Normalize (float32 divide by 255, subtract
mean, divide by std), so cached and uncached evaluation inputs are identical (tested).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import torch


class DeviceNormalize:
    def __init__(self, mean: Sequence[float], std: Sequence[float], erasing: Optional[Any] = None,
                 channels_last: bool = False) -> None:
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)
        self.erasing = erasing  # timm RandomErasing (batch-aware), training only
        self.channels_last = channels_last
        self._on: Dict[Any, Any] = {}

    def _stats(self, device: torch.device) -> Any:
        if device not in self._on:
            self._on[device] = (self.mean.to(device), self.std.to(device))
        return self._on[device]

    def _affine(self, device: torch.device) -> Any:
        key = ("affine", device)
        if key not in self._on:
            mean, std = self._stats(device)
            self._on[key] = (1.0 / (255.0 * std), mean / std)
        return self._on[key]

    def __call__(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        if x.dtype != torch.uint8:
            return x  # already a float tensor (data.cache=off)
        mean, std = self._stats(x.device)
        x = x.permute(0, 3, 1, 2)  # NHWC uint8 from the cache: NCHW values, NHWC memory (channels_last)
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        x = x.to(torch.float32, memory_format=layout)
        if train:  # fewer passes over the batch; evaluation keeps the exact ToTensor + Normalize arithmetic
            scale, shift = self._affine(x.device)
            x = x.mul_(scale).sub_(shift)
        else:
            x = x.div_(255).sub_(mean).div_(std)  # = ToTensor + Normalize, op for op
        if train and self.erasing is not None:
            self.erasing.device = x.device
            x = self.erasing(x)
        return x


def wants_channels_last(model: Any, accelerator_is_cuda: bool) -> bool:
    """channels_last pays on CUDA convolutions (tensor cores, cuDNN NHWC kernels); on CPU and for
    transformers it only costs layout conversions."""
    return accelerator_is_cuda and any(isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1) and
                                       m.kernel_size[0] < 16 for m in model.modules())
