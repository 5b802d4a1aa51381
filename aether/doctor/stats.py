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


def near_duplicates(records: Sequence[Record], max_bits: int = NEAR_DUPLICATE_BITS) -> List[List[Record]]:
    """Groups of images whose dHashes differ in at most `max_bits` bits (exact copies excluded).

    Pigeonhole banding: hashes within `max_bits` bits agree exactly on at least one of
    `max_bits + 1` disjoint bands, so only images sharing a band value are compared."""
    bands = max_bits + 1
    width = 64 // bands
    buckets: Dict[tuple, List[int]] = defaultdict(list)
    hashes = [int(r.dhash, 16) for r in records]
    for i, h in enumerate(hashes):
        for b in range(bands):
            buckets[(b, (h >> (b * width)) & ((1 << width) - 1))].append(i)
    parent = list(range(len(records)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for members in buckets.values():
        if len(members) < 2 or len(members) > 500:  # a huge bucket is a flat-colour artefact; skip
            continue
        for a_idx, a in enumerate(members):
            for b in members[a_idx + 1:]:
                if records[a].sha256 != records[b].sha256 and bin(hashes[a] ^ hashes[b]).count("1") <= max_bits:
                    parent[find(a)] = find(b)
    groups: Dict[int, List[Record]] = defaultdict(list)
    for i in range(len(records)):
        groups[find(i)].append(records[i])
    out = []
    for g in groups.values():
        if len({r.sha256 for r in g}) > 1:
            out.append(g)
    return out


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
