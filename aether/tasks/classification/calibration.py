"""Temperature scaling (`calibration=temperature`; Guo et al., "On Calibration of Modern Neural
Networks", 2017): one scalar T > 0, fitted after training on the validation split's logits by
minimising the negative log-likelihood of softmax(logits / T) with LBFGS (on log T, so T stays
positive). It never changes the top class of one view; it changes how confident the scores are.

The temperature and the reject threshold are saved as model/calibration.json beside the weights
(plain JSON, read and checked, never executed) and applied by every exported model path: the
PyTorch predictor, the ONNX runner and the BentoML service. Its readers are light (json only);
the fitting and the metrics import torch and torchmetrics when called.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from aether.errors import AetherError

FILE = "calibration.json"
N_BINS = 15
T_MIN, T_MAX = 0.05, 20.0  # a temperature outside this range says more about the split than the model
DEFAULTS: Dict[str, Any] = {"method": "none", "temperature": 1.0, "reject_below": None}


def fit_temperature(logits: Any, labels: Any) -> Tuple[float, Dict[str, Any]]:
    """(T, what the fit saw: images, NLL before and after, a note when T was left at 1 or clamped)."""
    import torch

    with torch.inference_mode(False), torch.enable_grad():  # trainer.test runs its hooks in inference mode
        z = logits.detach().clone().double().cpu()
        y = labels.detach().clone().long().cpu()
        n = int(z.shape[0])
        # the same keys whatever the data (metrics.json has one shape); note "" = nothing to say
        info: Dict[str, Any] = {"split": "val", "num_images": n, "nll_before": None, "nll_after": None, "note": ""}
        if n == 0:
            return 1.0, {**info, "note": "no validation images: the temperature is left at 1"}
        nll = torch.nn.functional.cross_entropy
        info["nll_before"] = round(float(nll(z, y)), 6)
        if bool((z.argmax(1) == y).all()):
            # every validation image right: the likelihood only grows as T -> 0, there is no error
            # to calibrate against, and a tiny T would make every answer near-certain
            return 1.0, {**info, "nll_after": info["nll_before"],
                         "note": "every validation image is classified right: nothing to calibrate against, "
                                 "the temperature is left at 1"}
        log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, tolerance_grad=1e-9, tolerance_change=1e-12,
                                line_search_fn="strong_wolfe")

        def closure() -> Any:
            opt.zero_grad()
            loss = nll(z / log_t.exp(), y)
            loss.backward()
            return loss

        opt.step(closure)
        t = float(log_t.detach().exp())
        if not math.isfinite(t):
            return 1.0, {**info, "note": "the fit did not converge: the temperature is left at 1"}
        clamped = min(T_MAX, max(T_MIN, t))
        if clamped != t:
            info["note"] = f"the fitted temperature {t:.4g} was clamped to [{T_MIN:g}, {T_MAX:g}]"
        info["nll_after"] = round(float(nll(z / clamped, y)), 6)
        return clamped, info


def ece(probs: Any, labels: Any) -> Optional[float]:
    """Expected calibration error of the top-1 probability (torchmetrics, 15 equal-width bins, L1)."""
    from torchmetrics.functional.classification import multiclass_calibration_error

    if probs.shape[0] == 0:
        return None
    return float(multiclass_calibration_error(probs.float(), labels.long(), num_classes=probs.shape[1],
                                              n_bins=N_BINS, norm="l1"))


def reliability(probs: Any, labels: Any, n_bins: int = N_BINS) -> List[Dict[str, Any]]:
    """The reliability diagram's bins: per equal-width bin of top-1 confidence, its images, mean
    confidence and accuracy (an empty bin: count 0, confidence and accuracy 0, so that
    metrics.json has the same shape whatever the data)."""
    import torch

    conf, pred = probs.float().max(1)
    right = (pred == labels.long()).float()
    which = torch.clamp((conf * n_bins).ceil().long() - 1, 0, n_bins - 1)  # (lo, hi] as torchmetrics bins
    out = []
    for b in range(n_bins):
        m = which == b
        c = int(m.sum())
        out.append({"lo": round(b / n_bins, 4), "hi": round((b + 1) / n_bins, 4), "count": c,
                    "confidence": round(float(conf[m].mean()), 6) if c else 0.0,
                    "accuracy": round(float(right[m].mean()), 6) if c else 0.0})
    return out


def write(model_dir: Path, method: str, temperature: float, reject_below: Optional[float],
          fit: Dict[str, Any]) -> Path:
    path = Path(model_dir) / FILE
    path.write_text(json.dumps({"method": method, "temperature": temperature, "reject_below": reject_below,
                                "fit": fit}, indent=2), encoding="utf-8")
    return path


def read(model_dir: Path) -> Dict[str, Any]:
    """model/calibration.json checked ({method, temperature, reject_below}); a folder without one
    (calibration=none before it existed, another task) has temperature 1 and no reject threshold."""
    path = Path(model_dir) / FILE
    if not path.is_file():
        return dict(DEFAULTS)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AetherError(f"{path}: cannot read it as JSON ({exc})") from None
    if not isinstance(data, dict):
        raise AetherError(f"{path}: expected a JSON object with method, temperature and reject_below")
    t = data.get("temperature", 1.0)
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
        raise AetherError(f"{path}: temperature={t!r}: expected a finite number > 0")
    r = data.get("reject_below")
    check_reject(r, f"{path}: reject_below")
    method = data.get("method", "temperature")
    if method not in ("none", "temperature"):
        raise AetherError(f"{path}: method={method!r}: expected none or temperature")
    return {"method": method, "temperature": float(t), "reject_below": None if r is None else float(r)}


def check_reject(value: Any, where: str = "reject_below") -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise AetherError(f"{where}={value!r}: expected a probability in (0, 1]")
    return float(value)
