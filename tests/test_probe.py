"""The linear probe reaches what a logistic regression on the same frozen features reaches
(issue 14, part 5), on real images: the embedded digits, through a frozen backbone."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_in_process

# a frozen, randomly initialised backbone: its pooled features are fixed, real-image features
# that a linear classifier separates well (~0.9 on digits), and nothing else can move them
PROBE = ["model=test_convnext", "model.pretrained=false", "strategy=linear_probe", "data.image_size=32",
         "data/augment=none", "trainer.max_epochs=1", "seed=3"]


def test_linear_probe_matches_logistic_regression_on_the_same_features(tmp_path: Path) -> None:
    runs = {}
    for init in ("logreg", "random"):
        run = tmp_path / init
        run_in_process(run, [*PROBE, f"strategy.head_init={init}"])
        runs[init] = json.loads((run / "metrics.json").read_text())
    solved = runs["logreg"]["strategy"]["head_init"]
    print({k: (m["test"]["accuracy"], m["strategy"]) for k, m in runs.items()})
    assert solved["train_images"] == runs["logreg"]["data"]["num_train"] and solved["val_acc"] > 0.7
    # the probe is at least the logistic regression (its validation score; same split, same features)
    assert runs["logreg"]["history"][0]["val/acc"] >= solved["val_acc"] - 1e-3  # (val_acc is rounded to 4 places)
    assert runs["logreg"]["test"]["accuracy"] >= solved["val_acc"] - 0.05
    # and far beyond one epoch of gradient descent from a random head (main's probe)
    assert runs["logreg"]["test"]["accuracy"] > runs["random"]["test"]["accuracy"] + 0.15
