"""The linear probe's head, solved before the first epoch (`strategy.head_init=logreg`).

A frozen backbone makes the probe a multinomial logistic regression on fixed features, a
convex problem that L-BFGS solves in seconds. Gradient descent from a random head does not get
there in a few epochs: pretrained pooled features are large and un-centred, so the first logits
are huge (a first-epoch loss of 6.8 for 5 classes) and AdamW at 1e-3 crawls (issue 14: 0.32
test accuracy where scikit-learn's logistic regression on the same features reaches 0.90). So,
once at the start of fit: the head's inputs for the training split (eval transforms, backbone in
eval mode), standardised, a scikit-learn LogisticRegression (its C chosen on the validation
split), and the solution, with the standardisation folded in, becomes the head's weight and
bias. Its first epoch keeps that head as solved (its steps are undone), so the first
validation - and the best-checkpoint choice - scores the logistic-regression head itself: the
run's result is never below it on the validation split. The epochs after it refine it
(augmented images, the run's own loss and LR) and win only by validating better.

Rank 0 solves and broadcasts, so every rank starts from the same head; a resumed run keeps the
head of its checkpoint.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, List, Optional, Tuple

import lightning as L
import numpy as np
import torch
from torch import nn

log = logging.getLogger("aether")

C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)  # inverse L2 strength on standardised features (sklearn's C)


@torch.no_grad()
def head_inputs(model: nn.Module, head: nn.Module, loader: Any, device: torch.device) -> Tuple[np.ndarray, np.ndarray]:
    """What `head` receives for every batch of `loader` (the pooled pre-logits features), and the labels."""
    feats: List[torch.Tensor] = []
    labels: List[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda m, args: feats.append(args[0].detach().flatten(1).float().cpu()))
    was_training = model.training
    model.eval()
    try:
        for x, y in loader:
            type(model).forward(model, x.to(device))  # the class's own forward: never a compiled wrapper
            labels.append(torch.as_tensor(y))
    finally:
        hook.remove()
        model.train(was_training)
    return torch.cat(feats).numpy(), torch.cat(labels).numpy()


def standardiser(x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Mean and std per feature; near-constant features keep a floor std (1% of the median), so
    folding 1/std into the weights cannot blow up on a feature that barely varies."""
    mean, std = x.mean(0), x.std(0)
    floor = max(float(np.median(std)) * 1e-2, 1e-8)
    return mean, np.maximum(std, floor)


def _full_rows(clf: Any, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """sklearn's coefficients as a (k, d) softmax head over all k classes: a binary problem's
    single row becomes two opposite halves; a class absent from the training split gets zero
    weights and a bias below every other."""
    coef, icpt = clf.coef_, clf.intercept_
    if coef.shape[0] == 1:
        coef, icpt = np.concatenate([-coef / 2, coef / 2]), np.concatenate([-icpt / 2, icpt / 2])
    w = np.zeros((k, coef.shape[1]), dtype=np.float64)
    b = np.full(k, float(icpt.min()) - 10.0)
    w[clf.classes_], b[clf.classes_] = coef, icpt
    return w, b


def _fit(x: np.ndarray, y: np.ndarray, c: float, weights: Optional[np.ndarray]) -> Any:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the epochs after it refine anyway
        return LogisticRegression(C=c, max_iter=1000).fit(x, y, sample_weight=None if weights is None else weights[y])


def _scores(clf: Any, x: np.ndarray, y: np.ndarray, k: int) -> Tuple[float, float]:
    """(accuracy, cross-entropy) of the fitted head on (x, y)."""
    w, b = _full_rows(clf, k)
    logits = x @ w.T + b
    logits -= logits.max(1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    return float((logits.argmax(1) == y).mean()), float(-logp[np.arange(len(y)), y].mean())


def solve(train: Tuple[np.ndarray, np.ndarray], val: Optional[Tuple[np.ndarray, np.ndarray]], k: int,
          c: Optional[float], class_weights: Optional[np.ndarray]) -> Dict[str, Any]:
    """The head (weight (k, d), bias (k,)) on RAW features, and what was chosen and measured."""
    x, y = train
    mean, std = standardiser(x)
    xs = (x - mean) / std
    vs = ((val[0] - mean) / std, val[1]) if val is not None and len(val[1]) else None
    tried: Dict[str, Tuple[float, float]] = {}
    if c is None and vs is not None:
        fits = {g: _fit(xs, y, g, class_weights) for g in C_GRID}
        tried = {f"{g:g}": _scores(f, *vs, k) for g, f in fits.items()}
        # the best validation accuracy, then the lowest validation loss; on a tie, the grid's middle (C=1)
        c = max(C_GRID, key=lambda g: (tried[f"{g:g}"][0], -tried[f"{g:g}"][1], -abs(np.log10(g))))
        clf = fits[c]
    else:
        c = 1.0 if c is None else c
        clf = _fit(xs, y, c, class_weights)
    w, b = _full_rows(clf, k)
    w_raw = w / std  # logits = w @ ((x - mean) / std) + b = (w / std) @ x + (b - (w / std) @ mean)
    b_raw = b - w_raw @ mean
    out = {"weight": torch.from_numpy(w_raw).float(), "bias": torch.from_numpy(b_raw).float(),
           "C": c, "train_images": int(len(y)), "features": int(x.shape[1]),
           "train_acc": round(_scores(clf, xs, y, k)[0], 4)}
    if vs is not None:
        out["val_acc"], out["val_loss"] = (round(v, 4) for v in _scores(clf, *vs, k))
    if tried:
        out["val_acc_by_C"] = {g: round(s[0], 4) for g, s in tried.items()}
    return out


def applies(pl_module: Any, head: nn.Module, datamodule: Any) -> Optional[str]:
    """None when the closed-form head fits this run; else why not (said once in the log)."""
    if not isinstance(getattr(pl_module, "criterion", None), nn.CrossEntropyLoss):
        return "the task's loss is not single-label cross-entropy"
    if not isinstance(head, nn.Linear) or head.bias is None or head.weight.dim() != 2:
        return f"the head is a {type(head).__name__}, not a full nn.Linear with a bias"
    if not (hasattr(datamodule, "bundle") and hasattr(datamodule, "eval_tf")):
        return "the data module has no classification splits"
    return None


class LogisticHeadInit(L.Callback):
    """At the start of fit, the head becomes the logistic-regression solution (see the module doc)."""

    def __init__(self, strategy: Any) -> None:
        self.strategy = strategy
        self.done = False
        self.held: Optional[Tuple[torch.Tensor, torch.Tensor]] = None  # the solved head, during its epoch

    def state_dict(self) -> Dict[str, Any]:
        return {"done": self.done}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.done = bool(state.get("done", False))

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.held is not None:  # the first epoch: undo the optimizer's step, whatever the optimizer
            with torch.no_grad():
                self.strategy.head.weight.copy_(self.held[0])
                self.strategy.head.bias.copy_(self.held[1])

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self.held = None  # validated next; from here on the epochs refine it

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        if self.done or trainer.ckpt_path:  # resumed: the checkpoint's head is the one to continue
            return
        head, dm = self.strategy.head, trainer.datamodule
        why_not = applies(pl_module, head, dm)
        if why_not:
            log.info("linear_probe: head_init=logreg skipped (%s); the head starts from its default init", why_not)
            return
        result = self._solve(trainer, pl_module, head, dm) if trainer.is_global_zero else None
        result = trainer.strategy.broadcast(result, src=0)  # every rank starts from rank 0's head
        with torch.no_grad():
            head.weight.copy_(result.pop("weight").to(head.weight))
            head.bias.copy_(result.pop("bias").to(head.bias))
        self.held = (head.weight.detach().clone(), head.bias.detach().clone())
        self.done = True
        self.strategy.head_init_result = result
        val = f", val acc {result['val_acc']:.4f}" if "val_acc" in result else ""
        log.info("linear_probe: head initialised by logistic regression on %d frozen training features (dim %d, "
                 "C=%g%s) in %.1f s; epoch 1 validates it as solved, later epochs refine it", result["train_images"], result["features"], result["C"],
                 val, result["seconds"])

    def _solve(self, trainer: Any, pl_module: Any, head: nn.Module, dm: Any) -> Dict[str, Any]:
        from torch.utils.data import DataLoader

        from aether.data.datamodule import ImageDataset
        from aether.data.loaders import eval_batch_size, workers_for

        t0 = time.perf_counter()
        batch = eval_batch_size(dm.cfg)

        def features(split: str) -> Tuple[np.ndarray, np.ndarray]:
            samples = dm.bundle.splits[split]
            loader = DataLoader(ImageDataset(samples, dm.eval_tf), batch_size=batch,
                                num_workers=workers_for(dm.cfg, len(samples)))
            return head_inputs(pl_module.model, head, loader, pl_module.device)

        weights = getattr(pl_module.criterion, "weight", None)
        result = solve(features("train"), features("val") if dm.bundle.splits.get("val") else None,
                       head.weight.shape[0], self.strategy.options.logreg_c,
                       None if weights is None else weights.detach().cpu().double().numpy())
        result["seconds"] = round(time.perf_counter() - t0, 2)
        return result
