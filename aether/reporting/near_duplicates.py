"""Leakage between a run's splits in feature space (issue 17 part 5): the same picture, cropped
or recoloured, in train and in val or test, which a perceptual hash (the doctor's dHash in
aether/doctor/stats.py) no longer matches.

The features are the coarse layouts of the run's backbone stages (aether.reporting.embeddings
`identity`), normalised per image and channel (identity_matrix: where each channel fires, not how
strongly), each dimension standardised over the dataset and each stage given equal weight, then
compared by cosine similarity. Plain nearest neighbours would pair every image with some image of its
class, so a pair must pass three tests:
- mutual nearest neighbours: each is the other's closest image, in any split;
- the margin: for both images, the match is clearly closer than the second-closest image,
  measured in robust standard deviations of that image's similarities to the others
  ((best - second) / (1.4826 * MAD)); a duplicate stands alone, a look-alike has company;
- the two lie in different splits (train-val, train-test, val-test).

Output: RUN/near_duplicates.csv (path_a, split_a, path_b, split_b, similarity, score), the
pairs side by side in near_duplicates.png, report.md's "Leakage" section and a warning in the
run's summary line.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

NEAR_DUPLICATES_CSV = "near_duplicates.csv"
NEAR_DUPLICATES_PNG = "near_duplicates.png"
COLUMNS = ("path_a", "split_a", "path_b", "split_b", "similarity", "score")
SHOWN = 12  # pairs drawn in the gallery and listed in report.md (the csv has them all)
BLOCK = 1024  # rows of the similarity matrix at a time: memory O(BLOCK * N), not O(N^2)
REFERENCE = 2048  # images each row's robust spread is measured against (all of them when fewer)


def identity_matrix(feats: np.ndarray, stages: Sequence[int], grid: int) -> np.ndarray:
    """Rows ready for cosine similarity. Each stage's layout (channels x grid cells) is, per image
    and channel, centred and scaled over its cells: what is left is where a channel fires, not
    how strongly, so a recolour or a brightness change (which shifts and scales whole channels)
    changes little while a different picture changes it all. Then each dimension is standardised
    over the images, each stage given equal weight, and each row made of unit length."""
    n, blocks, start = len(feats), [], 0
    for width in stages:
        a = feats[:, start:start + width].astype(np.float64).reshape(n, -1, grid * grid)
        start += width
        a = (a - a.mean(2, keepdims=True)) / (a.std(2, keepdims=True) + 1e-6)
        a = a.reshape(n, -1)
        a = (a - a.mean(0)) / (a.std(0) + 1e-6)
        blocks.append(a / (np.linalg.norm(a, axis=1, keepdims=True) + 1e-12))
    x = np.concatenate(blocks, axis=1)
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)


def match(x: np.ndarray, groups: Sequence[str], min_score: float, seed: int = 0) -> List[Dict[str, Any]]:
    """Pairs (i, j, similarity, score) that pass the three tests above, highest score first;
    score = the smaller of the two images' margins."""
    n = len(x)
    if n < 3:
        return []
    rng = np.random.default_rng(seed)
    ref = np.arange(n) if n <= REFERENCE else np.sort(rng.choice(n, REFERENCE, replace=False))
    best = np.empty(n, dtype=np.int64)
    s1, s2, spread = np.empty(n), np.empty(n), np.empty(n)
    for start in range(0, n, BLOCK):
        rows = np.arange(start, min(n, start + BLOCK))
        sim = x[rows] @ x.T
        sim[np.arange(len(rows)), rows] = -np.inf  # not itself
        top = np.argpartition(-sim, 1, axis=1)[:, :2]
        vals = np.take_along_axis(sim, top, axis=1)
        order = np.argsort(-vals, axis=1)
        best[rows] = np.take_along_axis(top, order, axis=1)[:, 0]
        vals = np.take_along_axis(vals, order, axis=1)
        s1[rows], s2[rows] = vals[:, 0], vals[:, 1]
        others = sim[:, ref].copy()
        others[~np.isfinite(others)] = np.nan
        med = np.nanmedian(others, axis=1)
        spread[rows] = 1.4826 * np.nanmedian(np.abs(others - med[:, None]), axis=1) + 1e-9
    margin = (s1 - s2) / spread
    pairs = []
    for i in range(n):
        j = int(best[i])
        if i < j and best[j] == i and groups[i] != groups[j]:
            score = float(min(margin[i], margin[j]))
            if score >= min_score:
                pairs.append({"i": i, "j": j, "similarity": float(s1[i]), "score": score})
    pairs.sort(key=lambda p: -p["score"])
    return pairs


SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}


def find_near_duplicates(split_feats: Dict[str, Any], split_paths: Dict[str, Sequence[str]], min_score: float,
                         seed: int = 0) -> List[Dict[str, Any]]:
    """Cross-split near-duplicate pairs of the run's images (split_feats: aether.reporting.
    embeddings.SplitFeatures per split); a is the earlier split (train, then val)."""
    names = [s for s in split_feats if len(split_paths[s])]
    if len(names) < 2:
        return []
    from aether.reporting.embeddings import GRID

    stages = split_feats[names[0]].stages
    x = identity_matrix(np.concatenate([split_feats[s].identity for s in names]), stages, GRID)
    paths = [p for s in names for p in split_paths[s]]
    groups = [s for s in names for _ in split_paths[s]]
    out = []
    for p in match(x, groups, min_score, seed):
        a, b = sorted((p["i"], p["j"]), key=lambda k: (SPLIT_ORDER.get(groups[k], 9), paths[k]))
        out.append({"path_a": paths[a], "split_a": groups[a], "path_b": paths[b], "split_b": groups[b],
                    "similarity": p["similarity"], "score": p["score"]})
    return out


def write_csv(pairs: Sequence[Dict[str, Any]], path: Path) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        for p in pairs:
            w.writerow([p["path_a"], p["split_a"], p["path_b"], p["split_b"], f"{p['similarity']:.6f}",
                        f"{p['score']:.3f}"])
    return path


def pairs_png(pairs: Sequence[Dict[str, Any]], path: Path) -> Path:
    """Each pair on one row, side by side: the earlier split's image, then the other one."""
    from aether.reporting.sheets import grid, tile

    tiles = []
    for p in pairs:
        for side in ("a", "b"):
            tiles.append(tile(p[f"path_{side}"], [(f"{p[f'split_{side}']}: {Path(p[f'path_{side}']).name}",
                                                    (0, 0, 0)),
                                                   (f"cos {p['similarity']:.3f} score {p['score']:.1f}"
                                                    if side == "a" else "", (90, 90, 90))]))
    grid(tiles, path, cols=2)
    return path


def section(run_dir: Path, split_feats: Dict[str, Any], split_paths: Dict[str, Sequence[str]], min_score: float,
            seed: int) -> Dict[str, Any]:
    """metrics.json's analysis.near_duplicates, with the csv and the gallery written."""
    pairs = find_near_duplicates(split_feats, split_paths, min_score, seed)
    write_csv(pairs, run_dir / NEAR_DUPLICATES_CSV)
    info: Dict[str, Any] = {"csv": NEAR_DUPLICATES_CSV, "count": len(pairs), "min_score": min_score,
                            "checked": sum(len(v) for v in split_paths.values()), "top": pairs[:SHOWN],
                            "png": None}
    if pairs:
        pairs_png(pairs[:SHOWN], run_dir / NEAR_DUPLICATES_PNG)
        info["png"] = NEAR_DUPLICATES_PNG
    return info


def warning(info: Dict[str, Any]) -> str:
    """The run summary's warning; empty when there is nothing to warn about."""
    if not info or not info.get("count"):
        return ""
    return (f"WARNING: {info['count']} image(s) near-duplicated across the splits (leakage: the test metrics may "
            f"be optimistic) - see {NEAR_DUPLICATES_CSV}")


def report_lines(info: Dict[str, Any]) -> List[str]:
    from aether.reporting.report import md_cell as _cell

    if not info:
        return []
    lines = ["## Leakage: near duplicates across the splits", ""]
    if info.get("error"):
        return lines + [f"- not searched: {_cell(info['error'])}", ""]
    lines += [f"Feature-space search (the backbone's pooled stages, mutual nearest neighbours whose match is at "
              f"least {info['min_score']:g} robust standard deviations clearer than the next image) over "
              f"{info['checked']} images: **{info['count']}** cross-split pair(s); `{NEAR_DUPLICATES_CSV}` "
              "lists them all. Unlike the perceptual hash of `aether inspect`, it finds crops and recolours.", ""]
    if info["count"]:
        lines += ["**Warning:** the same picture in two splits inflates the validation/test metrics; "
                  "remove one of each pair or move it into the same split.", "",
                  "![near duplicates](near_duplicates.png)", "",
                  "| # | image | split | duplicate | split | cosine | score |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {i} | {_cell(p['path_a'])} | {p['split_a']} | {_cell(p['path_b'])} | {p['split_b']} | "
                  f"{p['similarity']:.3f} | {p['score']:.1f} |" for i, p in enumerate(info["top"], 1)]
        lines.append("")
    return lines
