"""Is the checkpoint a resume starts from whole? (stdlib only: nothing is unpickled.)

A `last.ckpt` cut short (a full disk, a copy interrupted, a save from before Aether's atomic
writes) used to surface as torch's "PytorchStreamReader failed finding central directory"
traceback - after the run had already rewritten config.yaml with the new overrides. A
torch.save file is a zip archive: reading its directory and checking every member's CRC finds
truncation and corruption without loading a byte of it as Python objects, at disk speed.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Optional

from aether.errors import AetherError


def damage(path: Path) -> Optional[str]:
    """Why the torch checkpoint at `path` cannot be read whole, or None when it can."""
    try:
        with zipfile.ZipFile(path) as archive:
            if not any(n.endswith("/data.pkl") or n == "data.pkl" for n in archive.namelist()):
                return "not a PyTorch checkpoint (no data.pkl inside)"
            bad = archive.testzip()
            if bad is not None:
                return f"'{bad}' inside fails its CRC check"
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def check_resumable(folder: Path) -> None:
    """Raise one AetherError naming checkpoints/last.ckpt of `folder` when it is damaged, and
    what of the run can still be used. Called before anything in the folder is written."""
    last = folder / "checkpoints" / "last.ckpt"
    why = damage(last)
    if why is None:
        return
    best = folder / "checkpoints" / "best.ckpt"
    intact = []
    if (folder / "model").is_dir():
        intact.append(f"the model the run exported when it finished still exports (aether export run={folder})")
    if best.is_file() and damage(best) is None:
        intact.append(f"{best} (the best epoch's weights) is intact" + (
            "" if (folder / "model").is_dir() else f" and exports (aether export run={folder})"))
    keep = "; ".join(intact) or "no other checkpoint of the run is intact"
    raise AetherError(f"resume={folder}: {last} is damaged ({why}) and cannot be resumed; {keep}; config.yaml "
                      "was left as it was. Restore last.ckpt from a copy, or train anew in another folder "
                      "(hydra.run.dir=NEW_DIR)")
