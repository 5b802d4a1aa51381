"""Dataset statistics: class balance, image sizes, formats, exact and near duplicates.

Inputs are plain records (label, split, and the checker's per-file report fields), so the
same code serves the `inspect` verb and the gate before training.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence

NEAR_DUPLICATE_BITS = 4  # max Hamming distance between 64-bit dHashes to call two images near-duplicates


@dataclass
class Record:
    path: str
    label: str
    split: Optional[str]
    width: int
    height: int
    format: str
    mode: str
    sha256: str
    dhash: str  # 16 hex chars


def size_stats(records: Sequence[Record]) -> Dict[str, Any]:
    if not records:
        return {}
    ws = [r.width for r in records]
    hs = [r.height for r in records]
    aspects = [r.width / r.height for r in records if r.height]
    return {
        "width": {"min": min(ws), "median": statistics.median(ws), "max": max(ws)},
        "height": {"min": min(hs), "median": statistics.median(hs), "max": max(hs)},
        "aspect_ratio": {"min": round(min(aspects), 3), "median": round(statistics.median(aspects), 3),
                         "max": round(max(aspects), 3)},
        "formats": dict(Counter(r.format for r in records).most_common()),
        "modes": dict(Counter(r.mode for r in records).most_common()),
    }


def exact_duplicates(records: Iterable[Record]) -> List[List[Record]]:
    groups: Dict[str, List[Record]] = defaultdict(list)
    for r in records:
        groups[r.sha256].append(r)
    return [g for g in groups.values() if len(g) > 1]


MIN_SIDE_FOR_NEAR = 32  # below this a 9x8 perceptual hash is the picture itself: similar is not duplicate


def near_duplicates(records: Sequence[Record], max_bits: int = NEAR_DUPLICATE_BITS) -> List[List[Record]]:
    """Groups of images within `max_bits` bits of a group's first image (exact copies excluded).

    Leader clustering, not transitive closure: chains of slightly-different images would
    otherwise merge into one giant "duplicate" group. Pigeonhole banding finds candidates:
    hashes within `max_bits` bits agree exactly on one of `max_bits + 1` disjoint bands."""
    records = [r for r in records if min(r.width, r.height) >= MIN_SIDE_FOR_NEAR]
    bands = max_bits + 1
    width = 64 // bands
    mask = (1 << width) - 1
    hashes = [int(r.dhash, 16) for r in records]
    buckets: Dict[tuple, List[int]] = defaultdict(list)
    for i, h in enumerate(hashes):
        for b in range(bands):
            buckets[(b, (h >> (b * width)) & mask)].append(i)
    assigned = [False] * len(records)
    groups: List[List[Record]] = []
    for i, h in enumerate(hashes):
        if assigned[i]:
            continue
        members = [i]
        seen = {i}
        for b in range(bands):
            for j in buckets[(b, (h >> (b * width)) & mask)]:
                if j in seen or assigned[j]:
                    continue
                seen.add(j)
                if bin(h ^ hashes[j]).count("1") <= max_bits and records[j].sha256 != records[i].sha256:
                    members.append(j)
        if len(members) > 1:
            for j in members:
                assigned[j] = True
            groups.append([records[j] for j in members])
    return groups


def describe_group(kind: str, group: Sequence[Record]) -> Dict[str, Any]:
    labels = sorted({r.label for r in group})
    splits = sorted({r.split for r in group if r.split})
    entry: Dict[str, Any] = {"kind": kind, "paths": sorted(r.path for r in group), "labels": labels}
    if splits:
        entry["splits"] = splits
    flags = []
    if len(labels) > 1:
        flags.append("conflicting_labels")
    if len(splits) > 1:
        flags.append("cross_split_leakage")
    entry["flags"] = flags
    return entry


def imbalance_ratio(counts: Dict[str, int]) -> float:
    nonzero = [n for n in counts.values() if n > 0]
    return round(max(nonzero) / min(nonzero), 2) if nonzero else 0.0
