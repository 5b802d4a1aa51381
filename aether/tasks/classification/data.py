"""task=classification's data: the adapter's index -> the dataset doctor's check of every image
-> the split (stratified by class), as a DataBundle (aether.data.dataset)."""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Any, Dict, List

from aether.config.schema import DataCfg
from aether.data.dataset import DataBundle
from aether.data.split import split
from aether.errors import AetherError

log = logging.getLogger("aether")


def build_data(cfg: DataCfg, seed: int) -> DataBundle:
    from aether.doctor.inspect import examine

    # The doctor's verdict gates training: every file is checked (in parallel, cached by path,
    # size and mtime); a bad file is skipped AND reported, never silently lost.
    ex = examine(cfg)
    index = ex.index
    for w in index.warnings:
        log.warning("data: %s", w)
    for s in index.skipped[:10]:
        log.warning("skipping %s: %s", s.path, s.reason)
    if len(index.skipped) > 10:
        log.warning("... and %d more unusable files (all listed in metrics.json data.skipped)", len(index.skipped) - 10)

    counts = index.class_counts()
    empty = [c for c, n in counts.items() if n == 0]
    if empty:
        log.warning("classes with no usable image (left out of training): %s", ", ".join(empty))
        keep = [c for c in index.classes if counts[c] > 0]
        remap = {index.classes.index(c): i for i, c in enumerate(keep)}
        for s in index.samples:
            s.label = remap[s.label]
        index.classes = keep
    if len(index.classes) < 2:
        raise AetherError(
            f"data.path={cfg.path or '(embedded sample)'}: found {len(index.classes)} usable class"
            f"{'es' if len(index.classes) != 1 else ''} ({', '.join(index.classes) or 'none'}) in "
            f"{len(index.samples)} images; classification needs at least 2 class folders (or labels) "
            "with images in them"
        )

    # stratified by class; a pre-split folder's splits are kept (aether.data.split)
    splits, split_notes = split(index.samples, cfg.val_fraction, cfg.test_fraction, seed, stratum=lambda s: s.label)
    notes = list(index.notes) + split_notes
    small = [c for c, n in index.class_counts().items() if 0 < n < 3]
    if small:
        notes.append(f"classes with fewer than 3 images (not in every split): {', '.join(small)}")
    for n in notes:
        log.info("data: %s", n)
    return DataBundle(index, splits, notes, fingerprint=fingerprint(ex.records, index.samples))


def fingerprint(records: List[Any], samples: List[Any]) -> Dict[str, Any]:
    """The data the run used, as a file count and one content hash: SHA-256 over the sorted lines
    `relative path, class, split, file SHA-256` of every used image (the doctor hashed each file
    while checking it). Paths are relative to the images' common folder, so the same dataset
    copied elsewhere has the same fingerprint; any changed file, label or split changes it."""
    used = {s.path for s in samples}
    rows = [r for r in records if r.path in used]
    if not rows:
        return {"files": 0, "sha256": hashlib.sha256(b"").hexdigest()}
    base = os.path.commonpath([os.path.dirname(r.path) for r in rows])
    lines = sorted(f"{os.path.relpath(r.path, base)}\t{r.label}\t{r.split or ''}\t{r.sha256 or ''}" for r in rows)
    digest = hashlib.sha256("\n".join(lines).encode("utf-8", "surrogateescape")).hexdigest()
    return {"files": len(rows), "sha256": digest}
