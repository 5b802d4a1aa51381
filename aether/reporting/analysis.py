"""What a classification run works out about its own predictions after testing (issue 17,
parts 2 and 4), from one extra pass of the best model over the validation and test splits:

- `errors.csv`: every test image (path, true, predicted, confidence, loss), highest loss first;
- `worst_errors.png`: the `analysis.worst_n` highest-loss test images with true/predicted/confidence;
- `confused_pairs.png`: the most confused (true, predicted) class pairs, with example images;
- `pr_curves.png`: per-class (one-vs-rest) precision-recall curves on the test split;
- `label_issues.csv`: suspected label errors, from cleanlab's `find_label_issues` over
  out-of-sample probabilities (the validation and test splits: the model never trained on them).

Everything is also summarised in metrics.json's `analysis` section and in report.md's
"Error analysis" section (and so in report.html).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from aether.doctor.label_issues import LABEL_ISSUE_COLUMNS, LABEL_ISSUES_CSV  # `aether inspect run=` reads it
from aether.reporting.passes import eval_pass
from aether.reporting.report import md_cell as _cell
from aether.reporting.sheets import tile

log = logging.getLogger("aether")

ERRORS_CSV = "errors.csv"
SHOWN_ISSUES = 20  # rows of label_issues.csv shown in report.md



# the near-duplicate search compares every image with every other (time ~ N^2) and holds each
# image's stage layouts (tens of kB): past this many images in the splits it is skipped, said so
NEAR_DUPLICATES_MAX_IMAGES = 20_000

def options(raw: Dict[str, Any]) -> Any:
    """The run's `analysis:` section (validated; a config written before it existed gets the defaults)."""
    from aether.config.schema import AnalysisCfg

    return AnalysisCfg.model_validate(raw.get("analysis") or {})


def guarded(fn: Any, *args: Any) -> Dict[str, Any]:
    """`fn(*args)`, the analysis section; a failure is logged and recorded, never fatal: the run
    has trained and tested, and its model and report must still be written."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - any failure of the extra analysis
        log.warning("analysis: not done (%s: %s); the run's model and report are written without it",
                    type(exc).__name__, exc)
        return {"error": f"{type(exc).__name__}: {exc}"}


def error_lines(section: Dict[str, Any]) -> List[str]:
    """report.md's line for an analysis that failed."""
    return ["## Error analysis (test split)", "", f"- not done: {_cell(section['error'])}", ""]


def predict_probs(module: Any, datamodule: Any, split: str, multilabel: bool = False) -> np.ndarray:
    """Softmax (multilabel: sigmoid) probabilities (N, K) of the split's samples, in
    `bundle.splits[split]` order (one eval_pass of the module's best, already loaded, model)."""
    import torch

    def probs_of(x: Any) -> np.ndarray:
        logits = module(x).float()
        return (logits.sigmoid() if multilabel else torch.softmax(logits, dim=1)).cpu().numpy()

    out = eval_pass(module, datamodule, split, probs_of)
    n = len(datamodule.bundle.splits[split])
    probs = np.concatenate(out) if out else np.zeros((0, len(module.classes)), dtype=np.float32)
    if len(probs) != n:
        raise RuntimeError(f"analysis: {len(probs)} predictions for the {n} images of the {split} split")
    return probs.astype(np.float64)


# ---------------------------------------------------------------- errors


def error_rows(paths: Sequence[str], labels: np.ndarray, probs: np.ndarray, classes: Sequence[str]
               ) -> List[Dict[str, Any]]:
    """One row per test image, highest loss first: path, true, predicted, confidence (the
    probability of the predicted class), loss (cross-entropy of the true class), p_true."""
    pred = probs.argmax(1)
    p_true = probs[np.arange(len(labels)), labels]
    loss = -np.log(np.clip(p_true, 1e-12, 1.0))
    order = sorted(range(len(labels)), key=lambda i: (-loss[i], paths[i]))
    return [{"path": paths[i], "true": classes[labels[i]], "predicted": classes[pred[i]],
             "confidence": float(probs[i, pred[i]]), "loss": float(loss[i]), "p_true": float(p_true[i]),
             "correct": bool(pred[i] == labels[i])} for i in order]


def write_errors_csv(rows: Sequence[Dict[str, Any]], path: Path) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "true", "predicted", "confidence", "loss", "correct"])
        for r in rows:
            w.writerow([r["path"], r["true"], r["predicted"], f"{r['confidence']:.6f}", f"{r['loss']:.6f}",
                        int(r["correct"])])
    return path


def gallery_png(rows: Sequence[Dict[str, Any]], path: Path, cols: int = 4) -> Path:
    """The rows' images (the highest-loss ones) with true, predicted, confidence and loss."""
    from aether.reporting.sheets import grid

    tiles = []
    for r in rows:
        wrong = (200, 0, 0) if not r["correct"] else (0, 120, 0)
        tiles.append(tile(r["path"], [(f"true: {r['true']}", (0, 0, 0)),
                                       (f"pred: {r['predicted']} {r['confidence']:.2f}", wrong),
                                       (f"loss {r['loss']:.2f}", (90, 90, 90))]))
    grid(tiles, path, cols=min(cols, len(tiles)))
    return path


def confused_pairs(labels: np.ndarray, pred: np.ndarray, k: int, top: int) -> List[Tuple[int, int, int]]:
    """The `top` most frequent (true, predicted) pairs with true != predicted: (true, pred, count)."""
    m = np.bincount(labels * k + pred, minlength=k * k).reshape(k, k)
    np.fill_diagonal(m, 0)
    pairs = [(int(i), int(j), int(m[i, j])) for i, j in zip(*np.nonzero(m))]
    pairs.sort(key=lambda p: (-p[2], p[0], p[1]))
    return pairs[:top]


def confused_png(pairs: Sequence[Tuple[int, int, int]], rows: Sequence[Dict[str, Any]], classes: Sequence[str],
                 per_pair: int, path: Path) -> Path:
    """One row per pair: a caption tile, then its most confident mistakes."""
    from PIL import Image, ImageDraw

    from aether.reporting.sheets import grid

    tiles = []
    for t, p, n in pairs:
        head = Image.new("RGB", (128, 128 + 13 * 2 + 4), (246, 248, 250))
        d = ImageDraw.Draw(head)
        for i, text in enumerate([f"true: {classes[t]}", f"predicted as:", f"{classes[p]}", f"{n} test image(s)"]):
            d.text((4, 40 + 14 * i), text[:24], fill=(0, 0, 0))
        tiles.append(head)
        examples = sorted((r for r in rows if r["true"] == classes[t] and r["predicted"] == classes[p]),
                          key=lambda r: -r["confidence"])[:per_pair]
        for r in examples:
            tiles.append(tile(r["path"], [(f"pred {r['confidence']:.2f}", (200, 0, 0)),
                                           (Path(r["path"]).name, (90, 90, 90))]))
        tiles += [Image.new("RGB", head.size, (255, 255, 255))] * (per_pair - len(examples))
    grid(tiles, path, cols=per_pair + 1)
    return path


def pr_curves_png(labels: np.ndarray, probs: np.ndarray, classes: Sequence[str], path: Path,
                  most: int = 10) -> Dict[str, float]:
    """Per-class one-vs-rest precision-recall curves of the test split; with more than `most`
    classes, the `most` lowest-AP ones. `labels`: class indices (N,), or a multi-hot (N, K)
    matrix (multilabel). Returns each class's average precision (None: no test image)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import average_precision_score, precision_recall_curve

    positives = labels.astype(bool) if labels.ndim == 2 else labels[:, None] == np.arange(len(classes))[None, :]
    ap: Dict[str, Any] = {}
    for c, name in enumerate(classes):
        pos = positives[:, c]
        ap[name] = float(average_precision_score(pos, probs[:, c])) if pos.any() else None
    present = [c for c in range(len(classes)) if ap[classes[c]] is not None]
    shown = sorted(present, key=lambda c: ap[classes[c]])[:most] if len(present) > most else present
    fig, ax = plt.subplots(figsize=(6.5, 5))
    for c in shown:
        prec, rec, _ = precision_recall_curve(positives[:, c], probs[:, c])
        ax.step(rec, prec, where="post", label=f"{classes[c]} (AP {ap[classes[c]]:.3f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.0)
    ax.set_ylim(0, 1.03)
    ax.grid(alpha=0.3)
    title = "Precision-recall per class (test split, one vs rest)" if labels.ndim == 1 else \
        "Precision-recall per label (test split)"
    if len(shown) < len(present):
        title += f"\nthe {len(shown)} lowest-AP classes of {len(present)}"
    ax.set_title(title, fontsize=10)
    if shown:
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return ap


# ---------------------------------------------------------------- label issues


def find_issues(paths: Sequence[str], splits: Sequence[str], labels: np.ndarray, probs: np.ndarray,
                classes: Sequence[str]) -> List[Dict[str, Any]]:
    """cleanlab's find_label_issues over out-of-sample probabilities, ranked most suspect first
    (by self-confidence): path, split, given label, suggested label (the model's top class) and
    score (cleanlab's label-quality score in [0, 1]; lower = more likely mislabelled)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    if len(labels) == 0:
        return []
    # cleanlab expects rows that sum to 1 and every class to have a column
    probs = probs / probs.sum(1, keepdims=True)
    ranked = find_label_issues(labels, probs, return_indices_ranked_by="self_confidence", n_jobs=1)
    scores = get_label_quality_scores(labels, probs, method="self_confidence")
    suggested = probs.argmax(1)
    return [{"rank": r + 1, "path": paths[i], "split": splits[i], "given_label": classes[labels[i]],
             "suggested_label": classes[suggested[i]], "score": float(scores[i])}
            for r, i in enumerate(int(i) for i in ranked)]


def write_issues_csv(issues: Sequence[Dict[str, Any]], path: Path) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(LABEL_ISSUE_COLUMNS)
        for r in issues:
            w.writerow([r["rank"], r["path"], r["split"], r["given_label"], r["suggested_label"], f"{r['score']:.6f}"])
    return path


# ---------------------------------------------------------------- bootstrap


def _acc_f1(labels: np.ndarray, pred: np.ndarray, k: int) -> Tuple[float, float]:
    """Accuracy and macro F1; macro F1 averages the classes that occur (as true or predicted
    class), as scikit-learn does. O(N + K): no K x K matrix, so 1000 resamples stay cheap with
    many classes."""
    right = labels == pred
    tp = np.bincount(labels[right], minlength=k).astype(np.float64)
    denom = np.bincount(labels, minlength=k) + np.bincount(pred, minlength=k)  # 2tp + fp + fn
    seen = denom > 0
    f1 = float((2 * tp[seen] / denom[seen]).mean()) if seen.any() else 0.0
    return float(right.mean()) if len(labels) else 0.0, f1


def bootstrap(labels: np.ndarray, pred: np.ndarray, k: int, resamples: int, confidence: float, seed: int
              ) -> Dict[str, Any]:
    """Point estimates of accuracy and macro F1 on the test split, and percentile bootstrap
    intervals: `resamples` draws of the test images with replacement (numpy, seeded)."""
    n = len(labels)
    labels, pred = labels.astype(np.int64), pred.astype(np.int64)
    acc, f1 = _acc_f1(labels, pred, k)
    out: Dict[str, Any] = {"accuracy": {"value": acc}, "f1_macro": {"value": f1}}
    if resamples <= 0 or n == 0:
        return out
    rng = np.random.default_rng(seed)
    accs, f1s = np.empty(resamples), np.empty(resamples)
    for b in range(resamples):
        idx = rng.integers(0, n, n)
        accs[b], f1s[b] = _acc_f1(labels[idx], pred[idx], k)
    lo, hi = 100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2
    for key, vals in (("accuracy", accs), ("f1_macro", f1s)):
        out[key].update(low=float(np.percentile(vals, lo)), high=float(np.percentile(vals, hi)))
    return out


# ---------------------------------------------------------------- the whole analysis


def errors_section(run_dir: Path, rows: Sequence[Dict[str, Any]], worst_n: int) -> Dict[str, Any]:
    """errors.csv and the worst-errors gallery of `rows` (highest loss first): the start of the
    `analysis` section of classification and multilabel."""
    write_errors_csv(rows, run_dir / ERRORS_CSV)
    section: Dict[str, Any] = {"errors_csv": ERRORS_CSV, "num_test": len(rows),
                               "num_wrong": int(sum(not r["correct"] for r in rows))}
    worst = rows[:worst_n]
    if worst:
        gallery_png(worst, run_dir / "worst_errors.png")
        section["worst"] = [{key: r[key] for key in ("path", "true", "predicted", "confidence", "loss")}
                            for r in worst]
    return section


def analyse(run_dir: Path, job: Any, cfg: Any, seed: int) -> Dict[str, Any]:
    """Run the analysis (cfg: aether.config.schema.AnalysisCfg) and write its files; returns
    metrics.json's `analysis` section."""
    import time

    t0 = time.perf_counter()
    bundle, classes = job.bundle, list(job.bundle.classes)
    k = len(classes)
    test = bundle.splits["test"]
    probs = predict_probs(job.module, job.datamodule, "test")
    labels = np.array([s.label for s in test], dtype=np.int64)
    paths = [s.path for s in test]
    pred = probs.argmax(1)
    rows = error_rows(paths, labels, probs, classes)
    section = errors_section(run_dir, rows, cfg.worst_n)
    pairs = confused_pairs(labels, pred, k, cfg.confused_pairs) if cfg.confused_pairs else []
    section["confused_pairs"] = [{"true": classes[t], "predicted": classes[p], "count": n} for t, p, n in pairs]
    if pairs:
        confused_png(pairs, rows, classes, cfg.examples_per_pair, run_dir / "confused_pairs.png")
    section["average_precision"] = pr_curves_png(labels, probs, classes, run_dir / "pr_curves.png")
    section["bootstrap"] = {"resamples": cfg.bootstrap_resamples, "confidence": cfg.confidence, "seed": seed,
                            **bootstrap(labels, pred, k, cfg.bootstrap_resamples, cfg.confidence, seed)}
    if cfg.heatmaps:
        section["heatmaps"] = _heatmaps(run_dir, job, rows, classes, cfg)
    n_images = sum(len(job.bundle.splits[s]) for s in _splits_used(job.bundle.splits))
    too_many = cfg.near_duplicates and n_images > NEAR_DUPLICATES_MAX_IMAGES
    feats = _embeddings(job, cfg, near_duplicates=cfg.near_duplicates and not too_many)
    if cfg.label_issues != "off":
        section["label_issues"] = _label_issues(run_dir, job, probs, classes, cfg.label_issues,
                                                feats, seed)
    if too_many:
        section["near_duplicates"] = {"count": 0, "error": f"{n_images:,} images: above "
                                      f"{NEAR_DUPLICATES_MAX_IMAGES:,} the all-pairs search is skipped (its time "
                                      "grows with the square of the images; analysis.near_duplicates=false "
                                      "silences this); `aether inspect` still finds exact and hash duplicates"}
    elif cfg.near_duplicates:
        section["near_duplicates"] = _near_duplicates(run_dir, job, feats, cfg, seed)
    section["seconds"] = round(time.perf_counter() - t0, 3)
    li = section.get("label_issues") or {}
    log.info("analysis: %d of %d test images wrong (errors.csv)%s, in %.1f s", section["num_wrong"], len(rows),
             f"; {li['count']} suspected label errors of {li['checked']} out-of-sample images (label_issues.csv)"
             if li else "", section["seconds"])
    return section


def _splits_used(splits: Dict[str, Any]) -> List[str]:
    """train, val, test - without test where it is a copy of val (no test split was given)."""
    names = ["train", "val", "test"]
    if [s.path for s in splits["val"]] == [s.path for s in splits["test"]]:
        names.remove("test")
    return names


def _embeddings(job: Any, cfg: Any, near_duplicates: bool) -> Any:
    """Every split's frozen features (aether.reporting.embeddings), when kfold or the
    near-duplicate search needs them: {split: SplitFeatures}, or the exception that stopped them."""
    if cfg.label_issues != "kfold" and not near_duplicates:
        return None
    import time

    from aether.reporting.embeddings import embed_splits

    t0 = time.perf_counter()
    try:
        feats = embed_splits(job.module, job.datamodule, _splits_used(job.bundle.splits))
    except Exception as exc:  # noqa: BLE001 - a backbone without timm's feature API: said, not fatal
        log.warning("analysis: no embeddings (%s: %s)", type(exc).__name__, exc)
        return exc
    log.info("analysis: embedded %d images in %.1f s", sum(len(f.pre_logits) for f in feats.values()),
             time.perf_counter() - t0)
    return feats


def _near_duplicates(run_dir: Path, job: Any, feats: Any, cfg: Any, seed: int) -> Dict[str, Any]:
    from aether.reporting import near_duplicates

    if isinstance(feats, Exception):
        return {"error": f"no embeddings: {type(feats).__name__}: {feats}", "count": 0}
    paths = {name: [s.path for s in job.bundle.splits[name]] for name in feats}
    try:
        return near_duplicates.section(run_dir, feats, paths, cfg.near_duplicate_margin, seed)
    except Exception as exc:  # noqa: BLE001 - an extra: said, not fatal
        log.warning("analysis: no near-duplicate search (%s: %s)", type(exc).__name__, exc)
        return {"error": f"{type(exc).__name__}: {exc}", "count": 0}


EXPLAIN_CLASSES = 16  # classes that get a correctly classified example in explanations.png


def _heatmaps(run_dir: Path, job: Any, rows: Sequence[Dict[str, Any]], classes: List[str], cfg: Any
              ) -> Dict[str, Any]:
    """explanations.png: where the network looked (Grad-CAM, aether.reporting.heatmaps) on the
    `cfg.heatmaps` highest-loss test images - for the class it chose - and on the most confident
    correct image of each class. A backbone Grad-CAM cannot read is said, not fatal."""
    from aether.reporting.heatmaps import heatmap_sheet

    picks = [(r["path"], f"{_short(r['true'])} -> {_short(r['predicted'])} ({r['confidence']:.2f})",
              classes.index(r["predicted"])) for r in rows[:cfg.heatmaps] if not r["correct"]]
    right: Dict[str, Dict[str, Any]] = {}
    for r in rows:  # highest loss first: the last correct row of a class is its most confident
        if r["correct"]:
            right[r["true"]] = r
    picks += [(r["path"], f"{_short(r['true'])} ok ({r['confidence']:.2f})", classes.index(r["true"]))
              for name, r in list(sorted(right.items(), key=lambda kv: classes.index(kv[0])))[:EXPLAIN_CLASSES]]
    info: Dict[str, Any] = {"png": "explanations.png", "method": cfg.heatmap_method, "images": len(picks)}
    try:
        model = job.module.model
        if not heatmap_sheet(model, job.preprocessing, picks, run_dir / "explanations.png", cfg.heatmap_method):
            info.update(images=0, png=None)
    except Exception as exc:  # noqa: BLE001 - heatmaps are an extra: a model they cannot read is said, not fatal
        log.warning("analysis: no heatmaps (%s: %s)", type(exc).__name__, exc)
        info.update(error=f"{type(exc).__name__}: {exc}", images=0, png=None)
    return info


def _short(name: str, width: int = 14) -> str:
    return name if len(name) <= width else name[:width - 1] + "~"


KFOLDS = 3


def kfold_probs(x: np.ndarray, labels: np.ndarray, k: int, seed: int) -> Tuple[np.ndarray, int]:
    """Out-of-sample probabilities (N, k) of the training images: scikit-learn's logistic
    regression on their frozen features (standardised), KFOLDS-fold cross_val_predict stratified
    by class, so no image is scored by a fit that saw its label. Returns (probs, folds used):
    fewer folds when the rarest class has fewer images."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    present, counts = np.unique(labels, return_counts=True)
    folds = int(min(KFOLDS, counts.min())) if len(present) else 0
    if len(present) < 2 or folds < 2:
        raise ValueError(f"k-fold needs two classes with at least two training images each (have "
                         f"{dict(zip(present.tolist(), counts.tolist()))})")
    fit = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    oof = cross_val_predict(fit, x, labels, cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
                            method="predict_proba")
    probs = np.full((len(labels), k), 1e-6)  # a class absent from the training split: ~0, never exactly
    probs[:, present] = oof
    return probs / probs.sum(1, keepdims=True), folds


def _label_issues(run_dir: Path, job: Any, test_probs: np.ndarray, classes: List[str], method: str, feats: Any,
                  seed: int) -> Dict[str, Any]:
    """label_issues.csv from out-of-sample probabilities: the model's on val and test
    (holdout), plus (kfold) cross-validated ones on the training split."""
    splits = job.bundle.splits
    parts = [("test", splits["test"], test_probs)]
    if "test" in _splits_used(splits):
        parts.insert(0, ("val", splits["val"], predict_probs(job.module, job.datamodule, "val")))
    info: Dict[str, Any] = {"method": method, "csv": LABEL_ISSUES_CSV}
    try:
        if method == "kfold":
            if isinstance(feats, Exception):
                raise RuntimeError(f"no embeddings for kfold ({type(feats).__name__}: {feats})")
            train_labels = np.array([s.label for s in splits["train"]], dtype=np.int64)
            train_probs, folds = kfold_probs(feats["train"].pre_logits, train_labels, len(classes), seed)
            parts.insert(0, ("train", splits["train"], train_probs))
            info["kfold"] = {"folds": folds, "features": "pre_logits",
                             "cv_accuracy": float((train_probs.argmax(1) == train_labels).mean())}
        paths = [s.path for _, samples, _ in parts for s in samples]
        names = [name for name, samples, _ in parts for _ in samples]
        labels = np.array([s.label for _, samples, _ in parts for s in samples], dtype=np.int64)
        probs = np.concatenate([p for _, _, p in parts])
        info.update(checked=len(labels), splits=[name for name, _, _ in parts])
        issues = find_issues(paths, names, labels, probs, classes)
    except Exception as exc:  # noqa: BLE001 - cleanlab refuses some tiny or degenerate sets: said, not fatal
        log.warning("analysis: no label-issue search (%s)", exc)
        info.update(error=f"{type(exc).__name__}: {exc}", checked=info.get("checked", 0),
                    splits=info.get("splits", [name for name, _, _ in parts]))
        issues = []
    write_issues_csv(issues, run_dir / LABEL_ISSUES_CSV)
    info.update(count=len(issues), top=issues[:SHOWN_ISSUES])
    return info


# ---------------------------------------------------------------- report.md


def report_lines(section: Dict[str, Any]) -> List[str]:
    """report.md's "Error analysis" and "Suspected label errors" sections."""
    if not section:
        return []
    if "error" in section:
        return error_lines(section)
    lines = ["## Error analysis (test split)", "",
             f"{section['num_wrong']} of {section['num_test']} test images are "
             f"{'misclassified' if section.get('task') != 'multilabel' else 'not labelled exactly right'}; "
             f"`{ERRORS_CSV}` lists every test image (path, true, predicted, confidence, loss), highest loss first.",
             ""]
    b = section.get("bootstrap") or {}
    if "low" in (b.get("accuracy") or {}):
        pct = f"{100 * b['confidence']:g}%"
        lines += [f"- accuracy {b['accuracy']['value']:.4f} ({pct} CI {b['accuracy']['low']:.4f}-"
                  f"{b['accuracy']['high']:.4f}), macro F1 {b['f1_macro']['value']:.4f} ({pct} CI "
                  f"{b['f1_macro']['low']:.4f}-{b['f1_macro']['high']:.4f}); {b['resamples']} bootstrap "
                  f"resamples of the test split, seed {b['seed']}", ""]
    worst = section.get("worst") or []
    if worst:
        lines += [f"### The {len(worst)} highest-loss test images", "", "![worst errors](worst_errors.png)", "",
                  "| # | image | true | predicted | confidence | loss |", "|---|---|---|---|---|---|"]
        lines += [f"| {i} | {_cell(Path(r['path']).name)} | {_cell(r['true'])} | {_cell(r['predicted'])} | "
                  f"{r['confidence']:.3f} | {r['loss']:.3f} |" for i, r in enumerate(worst, 1)]
        lines.append("")
    pairs = section.get("confused_pairs") or []
    if pairs:
        lines += ["### Most confused class pairs", "", "| true | predicted as | test images |", "|---|---|---|"]
        lines += [f"| {_cell(p['true'])} | {_cell(p['predicted'])} | {p['count']} |" for p in pairs]
        lines += ["", "![confused pairs](confused_pairs.png)", ""]
    elif "confused_pairs" in section:
        lines += ["- no two classes were confused on the test split", ""]
    heat = section.get("heatmaps") or {}
    if heat.get("png"):
        lines += ["### Where the network looked", "",
                  f"{heat['method']} heatmaps (red: what drove the class named) on the highest-loss test images "
                  "(true -> predicted, confidence) and on one correctly classified image per class; "
                  "`aether explain run=RUN images=DIR` draws them for any images.", "",
                  "![heatmaps](explanations.png)", ""]
    elif heat.get("error"):
        lines += [f"- no heatmaps: {_cell(heat['error'])}", ""]
    lines += ["### Precision-recall per class", "", "![precision-recall curves](pr_curves.png)", ""]
    li = section.get("label_issues")
    if li:
        lines += ["## Suspected label errors", ""]
        if li.get("error"):
            lines += [f"- not searched: {_cell(li['error'])}", ""]
        else:
            lines += [f"cleanlab's `find_label_issues` on the out-of-sample probabilities of the "
                      f"{' and '.join(li['splits'])} split{'s' if len(li['splits']) > 1 else ''} ({li['checked']} "
                      f"images): **{li['count']}** suspected; `{LABEL_ISSUES_CSV}` ranks them all "
                      "(split: where the image is; score: label quality, lower = more suspect); "
                      "`aether inspect data=DIR run=RUN` shows them.", ""]
            kf = li.get("kfold")
            if kf:
                lines += [f"- training split (analysis.label_issues=kfold): {kf['folds']}-fold cross-validated "
                          "logistic regression on the trained backbone's frozen pre-logits features (accuracy "
                          f"{kf['cv_accuracy']:.3f}); validation/test: the model's own probabilities", ""]
            if li["top"]:
                lines += ["| # | image | split | given | suggested | score |", "|---|---|---|---|---|---|"]
                lines += [f"| {r['rank']} | {_cell(r['path'])} | {r['split']} | {_cell(r['given_label'])} | "
                          f"{_cell(r['suggested_label'])} | {r['score']:.3f} |" for r in li["top"]]
                lines.append("")
    from aether.reporting.near_duplicates import report_lines as near_duplicate_lines

    return lines + near_duplicate_lines(section.get("near_duplicates") or {})


# ---------------------------------------------------------------- multilabel


def _names(row: np.ndarray, classes: Sequence[str]) -> str:
    return ";".join(classes[i] for i in np.flatnonzero(row)) or "(none)"


def multilabel_rows(paths: Sequence[str], y: np.ndarray, probs: np.ndarray, thresholds: np.ndarray,
                    classes: Sequence[str]) -> List[Dict[str, Any]]:
    """One row per test image, highest loss first: true and predicted label sets (";"-joined),
    confidence (the least certain of its per-label decisions: min over labels of max(p, 1 - p)),
    loss (binary cross-entropy, mean over labels); correct = the predicted set is exactly right."""
    p = np.clip(probs, 1e-12, 1 - 1e-12)
    loss = -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean(1)
    pred = (probs >= thresholds[None, :]).astype(np.int64)
    conf = np.maximum(probs, 1 - probs).min(1)
    order = sorted(range(len(paths)), key=lambda i: (-loss[i], paths[i]))
    return [{"path": paths[i], "true": _names(y[i], classes), "predicted": _names(pred[i], classes),
             "confidence": float(conf[i]), "loss": float(loss[i]), "correct": bool((pred[i] == y[i]).all())}
            for i in order]


def analyse_multilabel(run_dir: Path, job: Any, cfg: Any) -> Dict[str, Any]:
    """task=multilabel's share of the analysis: errors.csv, the worst-errors gallery, per-label
    precision-recall curves and suspected label errors (cleanlab's multi-label mode on the
    held-out probabilities). No bootstrap intervals (its metrics are not single-label ones)."""
    import time

    t0 = time.perf_counter()
    classes = list(job.bundle.classes)
    thresholds = job.module.thresholds.detach().cpu().numpy().astype(np.float64)
    splits = job.bundle.splits
    probs = predict_probs(job.module, job.datamodule, "test", multilabel=True)
    y = np.array([it.target for it in splits["test"]], dtype=np.int64).reshape(len(splits["test"]), len(classes))
    rows = multilabel_rows([it.path for it in splits["test"]], y, probs, thresholds, classes)
    section = {"task": "multilabel", **errors_section(run_dir, rows, cfg.worst_n)}
    section["average_precision"] = pr_curves_png(y, probs, classes, run_dir / "pr_curves.png")
    if cfg.label_issues != "off":  # kfold is single-label: multilabel searches its held-out splits
        parts = [("test", splits["test"], probs, y)]
        if [it.path for it in splits["val"]] != [it.path for it in splits["test"]]:
            vy = np.array([it.target for it in splits["val"]], dtype=np.int64).reshape(len(splits["val"]), len(classes))
            parts.insert(0, ("val", splits["val"], predict_probs(job.module, job.datamodule, "val", multilabel=True),
                             vy))
        paths = [it.path for _, items, _, _ in parts for it in items]
        names = [name for name, items, _, _ in parts for _ in items]
        all_y = np.concatenate([t for _, _, _, t in parts])
        all_p = np.concatenate([p for _, _, p, _ in parts])
        info: Dict[str, Any] = {"method": "holdout", "csv": LABEL_ISSUES_CSV, "checked": len(paths),
                                "splits": [name for name, _, _, _ in parts]}
        if cfg.label_issues == "kfold":
            info["note"] = "kfold is for single-label classification; this multilabel run searched val + test"
        issues: List[Dict[str, Any]] = []
        try:
            from cleanlab.filter import find_label_issues
            from cleanlab.multilabel_classification import get_label_quality_scores

            given = [list(np.flatnonzero(row)) for row in all_y]
            ranked = find_label_issues(given, all_p, multi_label=True, return_indices_ranked_by="self_confidence",
                                       n_jobs=1)
            scores = get_label_quality_scores(given, all_p)
            pred = (all_p >= thresholds[None, :]).astype(np.int64)
            issues = [{"rank": r + 1, "path": paths[i], "split": names[i], "given_label": _names(all_y[i], classes),
                       "suggested_label": _names(pred[i], classes), "score": float(scores[i])}
                      for r, i in enumerate(int(i) for i in ranked)]
        except Exception as exc:  # noqa: BLE001 - cleanlab refuses some tiny or degenerate sets: said, not fatal
            log.warning("analysis: no label-issue search (cleanlab: %s)", exc)
            info["error"] = f"cleanlab: {exc}"
        write_issues_csv(issues, run_dir / LABEL_ISSUES_CSV)
        info.update(count=len(issues), top=issues[:SHOWN_ISSUES])
        section["label_issues"] = info
    section["seconds"] = round(time.perf_counter() - t0, 3)
    log.info("analysis: %d of %d test images not exactly right (errors.csv), in %.1f s", section["num_wrong"],
             len(rows), section["seconds"])
    return section


# ---------------------------------------------------------------- segmentation


def image_ious(module: Any, datamodule: Any, k: int, ignore_index: Optional[int]) -> List[Dict[str, float]]:
    """Per test image (in split order): its mean IoU over the classes in its true or predicted
    mask (pixels of `ignore_index` left out) and its pixel accuracy; one unsharded pass of the
    module's model (only rank 0 calls this)."""
    import torch
    from torch.utils.data import DataLoader

    from aether.data.loaders import loader_settings

    n = len(datamodule.bundle.splits["test"])
    settings = {**loader_settings(datamodule.cfg, n, train=False), "shuffle": False, "drop_last": False}
    loader = DataLoader(datamodule.dataset("test", False), collate_fn=datamodule.collate, **settings)
    param = next(module.parameters())
    was_training = module.training
    module.eval()
    out: List[Dict[str, float]] = []
    try:
        with torch.no_grad():
            for x, y in loader:
                pred = module(x.to(param.device, dtype=param.dtype)).argmax(1).cpu()
                for p, t in zip(pred, y):
                    valid = (t >= 0) & (t < k) if ignore_index is None else (t != ignore_index) & (t >= 0) & (t < k)
                    p, t = p[valid], t[valid]
                    inter = torch.bincount(t[p == t], minlength=k).double()
                    union = torch.bincount(t, minlength=k).double() + torch.bincount(p, minlength=k).double() - inter
                    seen = union > 0
                    out.append({"miou": float((inter[seen] / union[seen]).mean()) if seen.any() else 1.0,
                                "pixel_accuracy": float((p == t).double().mean()) if len(t) else 1.0})
    finally:
        module.train(was_training)
    return out


def write_segmentation_errors(paths: Sequence[str], scores: Sequence[Dict[str, float]], path: Path
                              ) -> List[Dict[str, Any]]:
    """errors.csv of a segmentation run: every test image with its IoU and pixel accuracy, lowest IoU first."""
    rows = sorted(({"path": p, **s} for p, s in zip(paths, scores)), key=lambda r: (r["miou"], r["path"]))
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "miou", "pixel_accuracy"])
        for r in rows:
            w.writerow([r["path"], f"{r['miou']:.6f}", f"{r['pixel_accuracy']:.6f}"])
    return rows


def segmentation_lines(section: Dict[str, Any]) -> List[str]:
    if "error" in section:
        return error_lines(section)
    worst = section.get("worst") or []
    lines = ["## Error analysis (test split)", "",
             f"`{ERRORS_CSV}` lists every test image with its IoU (mean over the classes in its true or predicted "
             "mask) and pixel accuracy, lowest IoU first.", ""]
    if worst:
        lines += [f"### The {len(worst)} lowest-IoU test images", "",
                  "Image, true mask (middle), prediction (right):", "", "![worst overlays](worst_overlays.png)", "",
                  "| # | image | IoU | pixel accuracy |", "|---|---|---|---|"]
        lines += [f"| {i} | {_cell(Path(r['path']).name)} | {r['miou']:.3f} | {r['pixel_accuracy']:.3f} |"
                  for i, r in enumerate(worst, 1)]
        lines.append("")
    return lines


# ---------------------------------------------------------------- detection


def image_ap(scores: np.ndarray, tp: np.ndarray, n_true: int) -> float:
    """One image's AP at the matching IoU (all classes pooled; `tp` from class-aware matching):
    the area under its all-point interpolated precision-recall curve. No true box: 1.0 without
    predictions, 0.0 with any."""
    if n_true == 0:
        return 1.0 if len(scores) == 0 else 0.0
    if len(scores) == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    hits = tp[order].astype(np.float64)
    ctp, cfp = np.cumsum(hits), np.cumsum(1 - hits)
    rec = np.concatenate([[0.0], ctp / n_true, [1.0]])
    prec = np.concatenate([[0.0], ctp / (ctp + cfp), [0.0]])
    prec = np.maximum.accumulate(prec[::-1])[::-1]  # the precision envelope
    steps = np.flatnonzero(rec[1:] != rec[:-1])
    return float(np.sum((rec[steps + 1] - rec[steps]) * prec[steps + 1]))


def write_detection_errors(rows: Sequence[Dict[str, Any]], path: Path) -> List[Dict[str, Any]]:
    """errors.csv of a detection run: every test image, lowest AP first."""
    rows = sorted(rows, key=lambda r: (r["ap50"], r["path"]))
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "ap50", "true_boxes", "predicted_boxes", "matched_boxes"])
        for r in rows:
            w.writerow([r["path"], f"{r['ap50']:.6f}", r["true_boxes"], r["predicted_boxes"], r["matched_boxes"]])
    return list(rows)


def detection_lines(section: Dict[str, Any], threshold: float) -> List[str]:
    if "error" in section:
        return error_lines(section)
    worst = section.get("worst") or []
    lines = ["## Error analysis (test split)", "",
             f"`{ERRORS_CSV}` lists every test image with its AP@.5 (all classes pooled), its true boxes, its "
             f"predicted boxes with score >= {threshold} and how many of those match a true box, lowest AP first.", ""]
    if worst:
        lines += [f"### The {len(worst)} lowest-AP test images", "",
                  f"True boxes in white, predictions with score >= {threshold}:", "",
                  "![worst detections](worst_detections.png)", "",
                  "| # | image | AP@.5 | true boxes | predicted | matched |", "|---|---|---|---|---|---|"]
        lines += [f"| {i} | {_cell(Path(r['path']).name)} | {r['ap50']:.3f} | {r['true_boxes']} | "
                  f"{r['predicted_boxes']} | {r['matched_boxes']} |" for i, r in enumerate(worst, 1)]
        lines.append("")
    return lines
