"""Knowledge distillation (`distill.teacher=RUN`): a finished classification run's model teaches
this run's (usually smaller) student through its softened class probabilities (Hinton et al.,
"Distilling the Knowledge in a Neural Network"): loss = (1 - alpha) * the usual cross-entropy +
alpha * T^2 * KL(teacher_T || student_T), with both logits divided by the temperature T.

The teacher is read from RUN/model/ (safetensors + JSON: no pickle, so a teacher run from
someone else cannot run code) and kept outside the student's module: it is neither trained,
nor checkpointed, nor exported. It sees the student's batches, re-normalised and resized to its
own preprocessing, so teacher and student may differ in input size and normalisation.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from aether.errors import AetherError

log = logging.getLogger("aether")


class Teacher:
    """A frozen, loaded classification model and what it needs to read the student's batches."""

    def __init__(self, run: Path, model: nn.Module, classes: List[str], pre: Dict[str, Any],
                 student_pre: Dict[str, Any]) -> None:
        self.run, self.model, self.classes, self.pre = run, model.eval(), classes, pre
        for p in self.model.parameters():
            p.requires_grad_(False)
        self._size = tuple(pre["input_size"][-2:])
        self.split_differs: List[str] = []
        # student-normalised -> pixels -> teacher-normalised, as one affine map per channel
        s_mean, s_std = torch.tensor(student_pre["mean"]), torch.tensor(student_pre["std"])
        t_mean, t_std = torch.tensor(pre["mean"]), torch.tensor(pre["std"])
        self._scale = (s_std / t_std).view(1, -1, 1, 1)
        self._shift = ((s_mean - t_mean) / t_std).view(1, -1, 1, 1)

    def to(self, device: Any) -> "Teacher":
        self.model.to(device)
        self._scale, self._shift = self._scale.to(device), self._shift.to(device)
        return self

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self._scale + self._shift
        if tuple(x.shape[-2:]) != self._size:
            x = F.interpolate(x, size=self._size, mode="bilinear", align_corners=False, antialias=True)
        return self.model(x).float()

    def test_accuracy(self) -> Optional[float]:
        try:
            return float(json.loads((self.run / "metrics.json").read_text())["test"]["accuracy"])
        except (OSError, ValueError, KeyError, TypeError):
            return None


def load_teacher(run: str, classes: List[str], student_pre: Dict[str, Any], rc: Any) -> Teacher:
    """The teacher of `distill.teacher=RUN`; errors name what is wrong with RUN. A teacher whose
    split differs from this run's may have trained on this run's test images: said, and recorded."""
    from aether.models.saved import load_model_dir

    root = Path(run).expanduser()
    folder = root / "model"
    if not (folder / "model.json").is_file() or not (folder / "model.safetensors").is_file():
        raise AetherError(f"distill.teacher={run}: no finished run there (expected {folder}/model.json and "
                          "model.safetensors, which every finished Aether run writes)")
    info = json.loads((folder / "model.json").read_text())
    if info.get("task", "classification") != "classification" or info.get("features_only"):
        raise AetherError(f"distill.teacher={run}: a task={info.get('task')} run; distillation needs a "
                          "classification teacher (its class probabilities are the soft targets)")
    model, t_classes, pre = load_model_dir(folder)
    if list(t_classes) != list(classes):
        raise AetherError(f"distill.teacher={run}: the teacher's classes {t_classes} are not this data's "
                          f"{list(classes)} (same names, same order expected): distil on the data it was trained on")
    teacher = Teacher(root, model, list(t_classes), pre, student_pre)
    teacher.split_differs = _split_differences(root, rc)
    if teacher.split_differs:
        log.warning("distill.teacher=%s was split differently (%s): it may have trained on this run's test "
                    "images, so the student's test accuracy can be optimistic; distil with the teacher's "
                    "seed and data settings", run, "; ".join(teacher.split_differs))
    return teacher


def _split_differences(root: Path, rc: Any) -> List[str]:
    """The split-deciding settings (seed, data path, fractions) where the teacher's config.yaml
    and this run differ; unknown (no readable config.yaml) counts as a difference."""
    import yaml

    try:
        cfg = yaml.safe_load((root / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return ["its config.yaml cannot be read"]
    data = cfg.get("data") or {}
    ours = {"seed": rc.seed, "data.path": rc.data.path, "data.val_fraction": rc.data.val_fraction,
            "data.test_fraction": rc.data.test_fraction}
    theirs = {"seed": cfg.get("seed"), "data.path": data.get("path"), "data.val_fraction": data.get("val_fraction"),
              "data.test_fraction": data.get("test_fraction")}
    return [f"{k} {theirs[k]} vs {v}" for k, v in ours.items() if theirs[k] != v]


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher_T || student_T) * T^2: the T^2 keeps its gradients on the scale of the hard
    loss's whatever the temperature (Hinton et al., section 2)."""
    t = temperature
    return F.kl_div(F.log_softmax(student.float() / t, -1), F.log_softmax(teacher / t, -1),
                    reduction="batchmean", log_target=True) * (t * t)


def _latency_ms(model: nn.Module, size: Any, batch: int = 8) -> float:
    """Median milliseconds per image of `model` on CPU, a batch of `batch` (after one warm-up)."""
    x = torch.randn(batch, 3, *size)
    was = model.training
    model.eval()
    times = []
    with torch.no_grad():
        for i in range(4):
            t0 = time.perf_counter()
            model(x)
            if i:
                times.append((time.perf_counter() - t0) * 1000 / batch)
    model.train(was)
    return round(statistics.median(times), 3)


def summary(teacher: Teacher, student: nn.Module, student_pre: Dict[str, Any], student_accuracy: float,
            temperature: float, alpha: float) -> Dict[str, Any]:
    """metrics.json's `distill` section: teacher vs student accuracy, size and CPU latency."""
    def params(m: nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    student_cpu = student.to("cpu")
    teacher_model = teacher.to("cpu").model
    return {
        "teacher": str(teacher.run), "temperature": temperature, "alpha": alpha,
        "same_split": not teacher.split_differs, "split_differences": teacher.split_differs,
        "teacher_accuracy": teacher.test_accuracy(), "student_accuracy": student_accuracy,
        "teacher_params": params(teacher_model), "student_params": params(student_cpu),
        "teacher_ms_per_image": _latency_ms(teacher_model, teacher.pre["input_size"][-2:]),
        "student_ms_per_image": _latency_ms(student_cpu, student_pre["input_size"][-2:]),
        "latency_note": "CPU, batch 8, median of 3 after a warm-up, in this process",
    }


def report_lines(d: Dict[str, Any]) -> List[str]:
    acc = "-" if d["teacher_accuracy"] is None else f"{d['teacher_accuracy']:.4f}"
    return ["## Distillation", "",
            f"Teacher `{d['teacher']}`, temperature {d['temperature']:g}, soft-loss weight {d['alpha']:g}.", "",
            "| model | test accuracy | parameters | ms / image (CPU) |", "|---|---:|---:|---:|",
            f"| teacher | {acc} | {d['teacher_params']:,} | {d['teacher_ms_per_image']:.2f} |",
            f"| student (this run) | {d['student_accuracy']:.4f} | {d['student_params']:,} | "
            f"{d['student_ms_per_image']:.2f} |", ""] + (
        [f"Warning: the teacher was split differently ({'; '.join(d['split_differences'])}): it may have "
         "trained on this run's test images.", ""] if d["split_differences"] else [])
