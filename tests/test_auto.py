"""`+recipe=auto` measures instead of guessing (issue 14, parts 2 and 3): it plans only what can
be loaded, tries the candidates within a budget on the validation split, prints and saves the
leaderboard, and finishes and tests the winner once - from scratch when no weights exist."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.conftest import make_folder, run_cli

FAST = ["data.image_size=32", "trainer.progress=plain", "data.num_workers=0"]


def _weights_file(path: Path) -> Path:
    """test_convnext weights of our own (random, fixed seed): real, frozen features of real images."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    sd = timm.create_model("test_convnext", pretrained=False).state_dict()
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


def test_auto_without_weights_trains_from_scratch_and_explains(tmp_path: Path) -> None:
    data = make_folder(tmp_path / "imgs", per_class=10)
    run = tmp_path / "run"
    r = run_cli(["+recipe=auto", f"data={data}", "model.name=test_convnext", *FAST, "auto.budget_minutes=0.6",
                 f"hydra.run.dir={run}"], tmp_path, env={"HF_HOME": str(tmp_path / "hf")})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "model = test_convnext (yours)" in r.stderr  # the user's choice, printed as theirs
    assert "auto leaderboard" in r.stdout and "scratch" in r.stdout
    summary = json.loads((run / "auto.json").read_text())
    names = [row["candidate"] for row in summary["leaderboard"]]
    assert names == ["scratch", "scratch_ema"]  # nothing pretrained can be loaded: no probe, no LoRA
    assert summary["winner"] in names and summary["monitor"] == "val/acc"
    for row in summary["leaderboard"]:
        assert {"val_metric", "seconds", "reason", "status", "epochs"} <= set(row)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["model"]["pretrained"] is False and cfg["auto"]["winner"] == summary["winner"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["auto"]["winner"] == summary["winner"] and "accuracy" in metrics["test"]
    assert "recipe=auto: the search" in (run / "report.md").read_text()
    assert (run / "model").is_dir() and (run / "checkpoints" / "best.ckpt").is_file()
    # the winner as a recipe: it composes to what the run trained
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "best_recipe.yaml").write_text((run / "best_recipe.yaml").read_text())
    r = run_cli(["+recipe=best_recipe", "--cfg", "job"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    again = yaml.safe_load(r.stdout)
    assert again["model"]["name"] == "test_convnext" and again["model"]["pretrained"] is False
    assert again["scheduler"]["name"] == cfg["scheduler"]["name"] and again["data"]["augment"] == cfg["data"]["augment"]
    # a finished auto run resumes like any run (no second search)
    r = run_cli([f"resume={run}", f"trainer.max_epochs={metrics['history'][-1]['epoch'] + 2}"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "auto: candidate" not in r.stdout and len(json.loads((run / "metrics.json").read_text())["history"]) > \
        len(metrics["history"])


def test_auto_with_a_weights_file_is_at_least_the_logistic_regression_probe(tmp_path: Path) -> None:
    """Real images (the embedded digits) through frozen features of a weights file: the search's
    result is at least what a logistic regression on those features reaches on the same split."""
    weights = _weights_file(tmp_path / "w.safetensors")
    run = tmp_path / "run"
    r = run_cli(["+recipe=auto", "model.name=test_convnext", f"model.weights={weights}", *FAST,
                 "auto.budget_minutes=1", f"hydra.run.dir={run}"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((run / "auto.json").read_text())
    board = {row["candidate"]: row for row in summary["leaderboard"]}
    assert list(board)[:2] == ["probe", "lora"] and "scratch" not in board  # their weights are the point
    probe = board["probe"]
    solved = probe["strategy"]["head_init"]  # the logistic regression on the frozen training features
    assert solved["val_acc"] > 0.8
    winner = board[summary["winner"]]
    assert winner["val_metric"] >= probe["val_metric"] >= solved["val_acc"] - 1e-3
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= solved["val_acc"] - 0.05


def test_the_plan_holds_only_what_can_be_loaded_and_keeps_the_users_choices() -> None:
    from aether.doctor.recommend import recommend
    from aether.sweeps.candidates import default_budget, plan

    cpu = {"cpus": 2, "gpus": 0, "gpu_memory_gb": 0.0}
    sizes = {"width": {"median": 300}, "height": {"median": 200}}
    counts = {"a": 200, "b": 200}
    none = recommend(560, counts, sizes, cpu, num_train=400, weights=lambda name: None)
    assert none["model"]["value"] == "resnet18" and none["model"]["pretrained"] is False
    assert [c.name for c in plan(none, {}, 400, 200, gpu=False)] == ["scratch", "scratch_ema"]
    # the preferred backbone's weights are missing but another's are cached: that one is chosen
    cached = recommend(560, counts, sizes, cpu, num_train=400, weights=lambda n: "cache" if n == "resnet18" else None)
    assert cached["model"]["value"] == "resnet18" and "convnext_atto's weights cannot be loaded" in cached["model"]["reason"]
    names = [c.name for c in plan(cached, {}, 400, 200, gpu=False)]
    assert names == ["probe", "lora", "full_llrd"]  # 200 px photos, 400 images: from scratch is not worth it
    assert [c.name for c in plan(cached, {}, 400, 32, gpu=False)][-2:] == ["scratch", "scratch_ema"]  # small images
    mine = plan(cached, {"strategy": "lora", "optimizer.lr": "0.01"}, 400, 200, gpu=False)
    assert [c.name for c in mine] == ["lora"] and not any(o.startswith("optimizer.lr") for o in mine[0].overrides)
    assert default_budget(3000, cpu)["value"] == 5.0 and default_budget(20000, cpu)["value"] == 20.0


def test_auto_runs_detection_data_to_a_finished_run(tmp_path: Path) -> None:
    """Any folder: boxes too. No weights here, so the one candidate is the from-scratch network."""
    from tests.tasks_data import make_scenes, write_detection

    data = write_detection(tmp_path / "boxes", "coco", make_scenes(16, size=64, seed=5))
    run = tmp_path / "run"
    r = run_cli(["+recipe=auto", f"data={data}", "model=test_convnext", "trainer.progress=plain",
                 "auto.budget_minutes=0.6", f"hydra.run.dir={run}"], tmp_path, env={"HF_HOME": str(tmp_path / "hf")})
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((run / "auto.json").read_text())
    assert [row["candidate"] for row in summary["leaderboard"]] == ["scratch"] and summary["monitor"] == "val/map"
    metrics = json.loads((run / "metrics.json").read_text())
    assert "map" in metrics["test"] and metrics["auto"]["winner"] == "scratch"


def test_a_plan_that_names_code_is_refused_before_anything_trains(tmp_path: Path) -> None:
    """`auto.plan` from someone else's recipe goes through the same trust check as a command line."""
    data = make_folder(tmp_path / "imgs", per_class=4)
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "shared.yaml").write_text(
        "# @package _global_\nrecipe: auto\nauto:\n  search: true\n  budget_minutes: 1\n  plan:\n"
        "    evil: \"strategy=full +loss.x._target_=os.getcwd | a gift\"\n")
    run = tmp_path / "run"
    r = run_cli(["+recipe=shared", f"data={data}", "model=test_convnext", *FAST, f"hydra.run.dir={run}"], tmp_path)
    assert r.returncode == 2 and "aether: error:" in r.stderr and "_target_" in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and not (run / "auto").exists()

