"""Checkpoints written straight to their file (Lightning's CheckpointIO plugin).

Lightning's default first serialises the whole checkpoint into an in-memory buffer and then
copies the buffer into the file: twice the checkpoint's size in RAM at every save, and about
three times slower than writing the file directly (measured by benchmarks/overhead.py, where
`last.ckpt` of a ResNet-18 with its AdamW state is 128 MB: the save took 0.6 s of a 22 s epoch).
Here the checkpoint goes to a temporary file in the same folder, renamed over the old one only
when complete - as atomic as Lightning's (a crash never leaves a half-written last.ckpt).
Remote paths (s3://, ...) keep Lightning's fsspec route.

Loading never runs code: a checkpoint in a run folder may come from someone else, and a pickle
can call any function while it is read. Every read goes through `load_checkpoint_safely`
(torch's `weights_only` unpickler: tensors, containers and primitives only), whatever
`weights_only` Lightning or a caller asks for; a file that needs more is refused with one
`aether: error:` naming it. Aether's own checkpoints need nothing more (their callback and loop
states are plain dicts of numbers, strings and tensors).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional

from lightning.pytorch.plugins.io import TorchCheckpointIO

from aether.errors import AetherError


def load_checkpoint_safely(path: Any, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """`torch.load` with `weights_only=True`; anything it refuses (pickled code, a corrupt or
    foreign file) becomes an AetherError naming the file. `mmap=True` maps the tensors instead
    of reading them (a cheap look at a large checkpoint)."""
    import pickle

    import torch

    target = Path(path)
    if not target.is_file():
        raise AetherError(f"checkpoint {target}: expected a checkpoint file written by Aether (torch.save)")
    try:
        return torch.load(str(target), map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AetherError(f"checkpoint {target}: refused - it holds pickled objects beyond tensors and plain values "
                          f"({first[:200]}); loading it could run code. Use checkpoints written by Aether itself, "
                          "or delete this file") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        if mmap and "mmap" in str(exc):  # a legacy (non-zip) file cannot be mapped: read it, still weights-only
            return load_checkpoint_safely(target, map_location, mmap=False)
        raise AetherError(f"checkpoint {target}: cannot be read as a PyTorch checkpoint ({str(exc)[:200]}); "
                          "it is damaged or not a checkpoint") from None


def check_checkpoint(path: Any) -> None:
    """Refuse a checkpoint that would run code when loaded, before anything starts from it."""
    load_checkpoint_safely(path, mmap=True)


class DirectCheckpointIO(TorchCheckpointIO):
    def load_checkpoint(self, path: Any, map_location: Optional[Any] = None,
                        weights_only: Optional[bool] = None) -> Dict[str, Any]:
        if "://" in str(path):
            return super().load_checkpoint(path, map_location, weights_only=True)
        # weights_only is ignored on purpose: never a plain unpickler (see the module docstring)
        return load_checkpoint_safely(path, map_location=map_location or "cpu")

    def save_checkpoint(self, checkpoint: Dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        import torch

        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        try:
            torch.save(checkpoint, tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
