"""Detection (and segmentation) defaults fitted to the data, on tiny generated inputs: NMS and
score threshold chosen on validation predictions, FPN levels that follow the box sizes, epochs,
warm-up and patience sized to small data, segmentation's native input size and batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List

import pytest
import torch

from tests.conftest import compose_raw


def _pred(boxes: List[List[float]], scores: List[float]) -> dict:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32), "scores": torch.tensor(scores),
            "labels": torch.zeros(len(boxes), dtype=torch.int64)}


def _target(boxes: List[List[float]]) -> dict:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.zeros(len(boxes), dtype=torch.int64)}


def test_postprocess_tuning_picks_the_nms_and_score_threshold_that_fit() -> None:
    """Two true neighbours overlap at IoU ~0.43 (NMS at 0.3 or 0.4 suppresses one of them); a
    duplicate of a true box overlaps it at IoU ~0.54 and outscores the other image's true box
    (NMS at 0.6 or 0.7 keeps it): only 0.5 gives mAP@.5 1. False positives score 0.2 and 0.1,
    true boxes >= 0.7: the best F1 is any threshold in (0.2, 0.7]; ties take the highest."""
    from aether.tasks.detection.task import match_boxes, tune_postprocess

    a, b = [0, 0, 40, 40], [16, 0, 56, 40]  # IoU 24/56 = 0.43
    dup = [0, 0, 40, 40 * 0.54]  # inside `a`: IoU 0.54
    preds = [_pred([a, b, dup, [80, 80, 90, 90]], [0.9, 0.85, 0.8, 0.2]),
             _pred([[10, 10, 50, 50], [60, 60, 70, 70]], [0.7, 0.1])]
    targets = [_target([a, b]), _target([[10, 10, 50, 50]])]
    pp = tune_postprocess(preds, targets, "tune", "tune", detections=100, min_score=0.05)
    grid = {float(k): v["map_50"] for k, v in pp["nms_grid"].items()}
    assert pp["nms_threshold"] == 0.5 and grid[0.5] == 1.0 and grid[0.4] < 1 and grid[0.6] < 1, grid
    assert pp["score_threshold"] == 0.7 and pp["val_f1"] == 1.0 and pp["tuned"] == ["nms_threshold", "score_threshold"]
    assert pp["score_grid"]["0.15"]["boxes"] == 4 and pp["score_grid"]["0.15"]["precision"] == 0.75
    fixed = tune_postprocess(preds, targets, 0.6, 0.3, detections=100, min_score=0.05)
    assert (fixed["nms_threshold"], fixed["score_threshold"], fixed["tuned"]) == (0.6, 0.3, [])
    scores, tp, n = match_boxes(preds[0], targets[0])  # greedy in score order: the duplicate is a false positive
    assert tp.tolist() == [True, True, False, False] and n == 2 and scores.tolist() == pytest.approx([0.9, 0.85, 0.8, 0.2])


def test_fpn_levels_follow_the_box_sizes() -> None:
    from aether.tasks.detection.detector import DetectorHead, choose_strides

    resnet = [2, 4, 8, 16, 32]
    # 30-100 px objects (aerial tree crowns at 416 px): P3 + P4 for FCOS, P6/P7 and P5 dropped
    assert choose_strides([30.0] * 20, [100.0] * 19 + [180.0], resnet, "fcos")[0] == [8, 16]
    # anchors of 4s-8s: one more level for the same boxes
    assert choose_strides([30.0] * 20, [180.0] * 20, resnet, "retinanet")[0] == [8, 16, 32]
    # tiny objects: a stride-4 level is added (stride 8 lays < 2 x 2 points on them)
    strides, why = choose_strides([6.0] * 20, [12.0] * 20, resnet, "fcos")
    assert strides == [4] and "10th percentile 6 px" in why
    # large objects only: the fine levels go, coarse extra levels stay
    assert choose_strides([150.0] * 20, [600.0] * 20, resnet, "fcos")[0] == [16, 32, 64]
    # a wide range keeps every level; nothing measured keeps torchvision's
    assert choose_strides([20.0] * 20, [1500.0] * 20, resnet, "fcos")[0] == [8, 16, 32, 64, 128]
    assert choose_strides([], [], resnet, "fcos")[0] == [8, 16, 32, 64, 128]
    import timm

    enc = timm.create_model("resnet18", pretrained=False, features_only=True).eval()
    ch, red = enc.feature_info.channels(), enc.feature_info.reduction()
    for kind in ("fcos", "retinanet", "faster_rcnn"):
        for strides in ([8, 16], [4], [16, 32, 64]):
            head = DetectorHead(ch, red, 2, kind, 32, 128, [0.5] * 3, [0.25] * 3, 0.0, 10, strides=strides,
                                nms_thresh=0.45).eval()
            maps = {}
            head.det.backbone.fn = None
            orig = head.det.head.forward if kind != "faster_rcnn" else head.det.rpn.head.forward

            def spy(x: Any, *a: Any, _o: Any = orig) -> Any:
                maps["sides"] = [f.shape[-1] for f in x]
                return _o(x, *a)

            if kind == "faster_rcnn":
                head.det.rpn.head.forward = spy
            else:
                head.det.head.forward = spy
            with torch.no_grad():
                out = head([torch.rand(3, 128, 128)], enc)
            assert maps["sides"] == [128 // s for s in strides], (kind, strides, maps)
            assert set(out[0]) >= {"boxes", "scores", "labels"} and head.postprocess()[0] == 0.45
            # every parameter is read (DDP refuses parameters that never get a gradient)
            head.train()
            losses = head([torch.rand(3, 128, 128)], enc, [{"boxes": torch.tensor([[10.0, 10, 60, 60]]),
                                                           "labels": torch.tensor([1])}])
            sum(losses.values()).backward()
            assert all(p.grad is not None for n, p in head.named_parameters()), \
                [n for n, p in head.named_parameters() if p.grad is None]
    from aether.errors import AetherError

    with pytest.raises(AetherError, match="offers strides"):
        DetectorHead(ch, red, 2, "fcos", 32, 128, [0.5] * 3, [0.25] * 3, 0.0, 10, strides=[64, 128])


@pytest.fixture(scope="module")
def voc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tasks_data import make_scenes, write_detection

    return write_detection(tmp_path_factory.mktemp("det") / "voc", "voc", make_scenes(40, size=64, n_max=2, seed=11))


def test_small_data_gets_levels_epochs_warmup_and_patience(voc: Path) -> None:
    """24 training images at batch 3 = 8 steps an epoch: 30 epochs (240 steps, the cap) instead of
    10, warm-up 3 epochs, early-stopping patience 10; 16-32 px shapes at 64 px: one stride-8
    level. All of it lands in config.yaml's resolved values; values the user set are kept."""
    from aether.config.validate import validate
    from aether.run import _record_resolved, prepare

    base = ["model=test_convnext", f"data={voc}", "model.pretrained=false", "data.num_workers=0"]
    raw = compose_raw(base)
    rc = validate(raw)
    job = prepare(rc)
    assert (rc.data.batch_size, rc.trainer.max_epochs, rc.trainer.early_stopping.patience) == (3, 30, 10)
    assert rc.scheduler.warmup_epochs == 3 and job.module.scheduler_cfg["warmup_epochs"] == 3
    fitted = job.task.fitted
    assert set(fitted) == {"image_size", "batch_size", "max_epochs", "early_stopping_patience", "warmup_epochs",
                           "strides"}
    assert fitted["strides"]["value"] == [8] and "drops [16, 32, 64, 128]" in fitted["strides"]["why"]
    assert job.task.options.strides == [8] and len(job.module.model.head.outputs) == 1
    assert _record_resolved(raw, rc, job.task.resolved)
    assert raw["trainer"]["max_epochs"] == 30 and raw["task_options"]["strides"] == [8]
    assert raw["scheduler"]["warmup_epochs"] == 3 and raw["trainer"]["early_stopping"]["patience"] == 10
    validate(raw)  # the recorded config still validates (resume=, model_dir_from_best)
    rc = validate(compose_raw([*base, "trainer.max_epochs=4", "+task_options.strides=[8,16,32,64,128]"]))
    job = prepare(rc)
    assert rc.trainer.max_epochs == 4 and rc.scheduler.warmup_epochs == 1 and rc.trainer.early_stopping.patience == 5
    assert "max_epochs" not in job.task.fitted and "strides" not in job.task.fitted
    assert len(job.module.model.head.outputs) == 5
    rc = validate(compose_raw([*base, "trainer.max_epochs=10"]))
    rc._explicit = {"trainer.max_epochs"}  # as `aether ... trainer.max_epochs=10` (aether.launch.train) marks it
    prepare(rc)
    assert rc.trainer.max_epochs == 10 and rc.data.batch_size == 3


def test_segmentation_takes_image_and_batch_size_from_small_data(tmp_path: Path) -> None:
    from aether.config.validate import validate
    from aether.run import prepare
    from tests.tasks_data import write_masks

    root = write_masks(tmp_path / "seg", n=24, size=96)
    base = ["model=test_convnext", f"data={root}", "model.pretrained=false", "data.num_workers=0"]
    job = prepare(validate(compose_raw(base)))
    # 96 px masks stay 96 px (not the backbone's 224); 16 training images: batch 2 = 8 steps an epoch
    assert job.preprocessing["input_size"][-1] == 96 and job.datamodule.cfg.batch_size == 2
    assert job.task.fitted["image_size"]["value"] == 96 and job.task.fitted["batch_size"]["value"] == 2
    job = prepare(validate(compose_raw([*base, "data.image_size=64", "data.batch_size=5"])))
    assert job.preprocessing["input_size"][-1] == 64 and job.datamodule.cfg.batch_size == 5 and not job.task.fitted
