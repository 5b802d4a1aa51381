"""Class folders: `root/<class>/img.jpg`; nested trees give labels like `animals/cat`;
`root/train|val|test/<class>/...` is respected as a pre-made split. Each folder is read once
and symlinks out of `root` are refused (aether.data.walk)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from aether.data.formats.base import Format, Match, images_under, root_guard
from aether.data.index import SPLITS, DatasetIndex, Sample, Skipped
from aether.data.manifests import SPLIT_ALIASES
from aether.data.roots import outside_warning
from aether.data.walk import walk_images
from aether.errors import AetherError


class Folder(Format):
    name = "folder"
    priority = 50
    fallback = True  # every structured dataset also has folders of images: only when nothing else matched
    strict = False  # the loader says what is wrong with a folder; other tasks read folders their own way
    looks_like = "class sub-folders of images"

    def detect(self, path: Path, task_hint: Optional[str] = None) -> Optional[Match]:
        if not path.is_dir():
            return None
        classes = {}
        for d in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
            n = len(images_under(d))
            if n:
                classes[d.name] = n
        if not classes:
            return None
        evidence = [f"{len(classes)} sub-folders hold images ({sum(classes.values())} in all): "
                    + ", ".join(f"{k} ({v})" for k, v in list(classes.items())[:10])
                    + (" ..." if len(classes) > 10 else "")]
        summary = {"num_classes": len(classes), "num_images": sum(classes.values()), "images_per_class": classes}
        return Match(self.name, self.task, evidence, summary)

    def load(self, path: Path, options: Dict[str, Any]) -> DatasetIndex:
        try:
            split_dirs = {SPLIT_ALIASES[d.name.lower()]: d for d in sorted(path.iterdir())
                          if d.is_dir() and d.name.lower() in SPLIT_ALIASES}
        except OSError as exc:
            raise AetherError(f"data.path={path}: cannot list the folder ({exc.strerror})") from None
        presplit = "train" in split_dirs
        roots = [(split_dirs[s], s) for s in SPLITS if s in split_dirs] if presplit else [(path, None)]
        guard = root_guard(path, options)
        entries: List[Tuple[Path, str, Optional[str]]] = []
        skipped: List[Skipped] = []
        warnings: List[str] = []
        ignored: Dict[str, int] = {"hidden": 0, "non_image": 0}
        for root, split in roots:
            walk = walk_images(root, guard)
            for k, v in walk.ignored.items():
                ignored[k] += v
            skipped += walk.skipped
            warnings += walk.warnings
            for img in walk.images:
                rel_dir = img.parent.relative_to(root)
                if str(rel_dir) == ".":
                    skipped.append(Skipped(str(img), "not inside a class folder (cannot tell its label)"))
                    continue
                entries.append((img, rel_dir.as_posix(), split))
        classes = sorted({label for _, label, _ in entries})
        lookup = {c: i for i, c in enumerate(classes)}
        samples = [Sample(str(p), lookup[label], split) for p, label, split in entries]
        notes = []
        if presplit:
            notes.append(f"pre-split folders found ({', '.join(s for s in SPLITS if s in split_dirs)}): used as given")
        return DatasetIndex(str(path), self.name, classes, samples, skipped, ignored, notes,
                            warnings + outside_warning(skipped))
