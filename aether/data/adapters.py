"""The classification formats under their earlier adapter names; they live in
aether.data.formats (folder, manifest, digits), which the registry names since formats own
their detection and loading."""

from __future__ import annotations

from aether.data.formats.base import root_guard as guard_for
from aether.data.formats.digits import Digits as DigitsAdapter
from aether.data.formats.digits import materialize_digits
from aether.data.formats.folder import Folder as FolderAdapter
from aether.data.formats.manifest import Manifest as ManifestAdapter
from aether.data.formats.manifest import single_label
from aether.data.manifests import SPLIT_ALIASES
from aether.data.walk import walk_images

__all__ = ["SPLIT_ALIASES", "walk_images", "FolderAdapter", "ManifestAdapter", "DigitsAdapter", "guard_for",
           "single_label", "materialize_digits"]
