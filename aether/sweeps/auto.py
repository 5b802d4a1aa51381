"""`+recipe=auto` and `+sweep=auto`, and the command-line preparation of every `+sweep=NAME`.

recipe=auto: the dataset doctor's recommendations (strategy, backbone, input size, batch size,
epochs, class weights) plus a learning rate and a device set-up from a hardware probe (GPU
count and memory, CPU cores) become overrides placed before the user's own (the user's win).
Each choice is printed with a one-line reason and recorded under `auto:` in the run's config.
"""

from __future__ import annotations

import hashlib
import sys
from typing import Any, Dict, List

from aether.sweeps.space import format_value

# Learning rates that work across backbones for each strategy (AdamW, batch 32), scaled
# linearly with the batch size: the usual starting points of timm/PEFT fine-tuning recipes.
BASE_LR = {"linear_probe": 1e-3, "lora": 5e-4, "qlora": 5e-4, "gradual_unfreeze": 3e-4, "full": 1e-4}


# recommendation -> the config key (or group) it sets
AUTO_KEYS = {"strategy": "strategy", "model": "model", "image_size": "data.image_size", "batch_size": "data.batch_size",
             "epochs": "trainer.max_epochs", "class_weights": "loss.class_weights", "lr": "optimizer.lr",
             "trainer": "trainer"}


def learning_rate(strategy: str, batch_size: int) -> Dict[str, Any]:
    base = BASE_LR.get(strategy, 1e-4)
    lr = float(f"{base * batch_size / 32:.3g}")
    what = {"linear_probe": "only the head trains, so a high LR converges in few epochs",
            "lora": "adapters start at zero and tolerate a larger LR than full weights",
            "full": "every pretrained weight moves: a small LR keeps the features"}.get(strategy, "a safe start")
    return {"value": lr, "reason": f"{strategy}: {what} ({base:g} at batch 32, scaled to batch {batch_size})"}


def devices(hw: Dict[str, Any]) -> Dict[str, Any]:
    gpus = int(hw.get("gpus", 0))
    if gpus > 1:
        return {"value": "ddp", "reason": f"{gpus} GPUs: data-parallel on all of them"}
    if gpus == 1:
        return {"value": "gpu", "reason": f"1 GPU with {hw.get('gpu_memory_gb')} GiB: bf16 mixed precision"}
    return {"value": "default", "reason": f"no GPU: {hw.get('cpus')} CPU cores, 32-bit"}


def recommendations(overrides: List[str]) -> Dict[str, Dict[str, Any]]:
    from aether.config import hydra_setup
    from aether.doctor.inspect import examine
    from aether.doctor.recommend import hardware, recommend
    from aether.doctor.stats import size_stats

    _, rc = hydra_setup.compose_run(overrides)
    ex = examine(rc.data)
    counts = {c: n for c, n in ex.index.class_counts().items() if n}
    hw = hardware()
    rec = recommend(len(ex.index.samples), counts, size_stats(ex.records), hw)
    rec["lr"] = learning_rate(rec["strategy"]["value"], rec["batch_size"]["value"])
    rec["trainer"] = devices(hw)
    return rec


def _overrides(rec: Dict[str, Dict[str, Any]]) -> List[tuple]:
    """(config key, override) for each recommendation."""
    from aether.doctor.recommend import as_overrides

    out = [(o.split("=", 1)[0], o) for o in as_overrides(rec)]
    out.append(("optimizer.lr", f"optimizer.lr={rec['lr']['value']}"))
    out.append(("trainer", f"trainer={rec['trainer']['value']}"))
    return out


def auto_recipe(args: List[str], overrides: List[str]) -> List[str]:
    """The arguments with the recommendations (and their reasons, under `auto:`) put first."""
    if any(o.startswith("++auto.") for o in overrides):
        return args  # already chosen: a sweep trial or a DDP rank re-launched with the first choices
    rec = recommendations(overrides)
    user_keys = {o.lstrip("+~").split("=", 1)[0] for o in overrides}
    names = AUTO_KEYS
    chosen: List[str] = []
    print("recipe=auto - the dataset doctor chose, for this data and this machine:", file=sys.stderr)
    for key, override in _overrides(rec):
        mine = key in user_keys or (key == "model" and "model.name" in user_keys)
        rname = next(k for k, v in names.items() if v == key)
        r = rec[rname]
        print(f"  {key} = {r['value']}{' (yours)' if mine else ''}: {r['reason']}", file=sys.stderr)
        if not mine:
            chosen.append(override)
            note = f"{r['value']}: {r['reason']}"
            chosen.append(f"++auto.{rname}={format_value(note)}")
    rest = [a for a in args if a not in ("+recipe=auto", "recipe=auto")]
    return ["+recipe=auto", *chosen, *rest]


# ------------------------------------------------------------------ sweeps on the command line

IGNORED_FOR_ID = ("sweep.n_trials=", "sweep.budget_minutes=", "hydra.", "hydra/", "-")


def sweep_id(overrides: List[str]) -> str:
    """Same command, same id: so re-running a sweep finds its folder and study again."""
    kept = sorted(o for o in overrides if not o.startswith(IGNORED_FOR_ID))
    return hashlib.sha1("\n".join(kept).encode()).hexdigest()[:8]


def auto_space(raw: Dict[str, Any]) -> List[str]:
    """Search dimensions around the run's own settings (`+sweep=auto`), by strategy."""
    lr = float(raw["optimizer"]["lr"])
    dims = [f"optimizer.lr=tag(log,interval({lr / 5:.3g},{lr * 5:.3g}))"]
    if "weight_decay" in raw["optimizer"]:
        dims.append("optimizer.weight_decay=tag(log,interval(1e-4,0.1))")
    if raw["strategy"]["name"] in ("lora", "qlora"):
        dims.append("strategy.r=choice(4,8,16)")
    else:
        dims.append("loss.label_smoothing=choice(0.0,0.1)")
    return dims


def prepare_sweep(args: List[str], overrides: List[str]) -> List[str]:
    """For `+sweep=NAME`: multirun mode, the search space checked before anything runs, and a
    sweep folder named after the command (so the same command continues the same study)."""
    from aether.config import hydra_setup, preflight
    from aether.sweeps.space import parse_space
    from aether.sweeps.spec import SweepCfg

    if any(o.startswith("++sweep.trial=") for o in overrides):
        return args  # one trial of a sweep (e.g. a DDP rank that Lightning re-launched): a single run
    raw, _ = hydra_setup.compose_run(overrides)
    spec = SweepCfg(**raw["sweep"])
    chosen = {AUTO_KEYS.get(o.split("=", 1)[0][len("++auto."):]) for o in overrides if o.startswith("++auto.")}
    fixed = {o.lstrip("+~").split("=", 1)[0] for o in overrides} - chosen  # recipe=auto's picks are starts
    extra = auto_space(raw) if spec.name == "auto" else []
    extra = [e for e in extra if e.split("=", 1)[0] not in fixed]
    checks = [p.choice_override() for p in parse_space(spec.params) if p.key not in fixed]
    preflight.check([*overrides, *checks, *extra])  # every value the search may try, before any trial runs
    # added next to the user's overrides: Hydra's parser wants them together, before flags like `--cfg job`
    if not any(a.startswith("hydra.sweep.dir=") for a in args):
        folder = f"multirun/sweeps/{spec.name}-{sweep_id(overrides)}"
        extra.append(f"hydra.sweep.dir={folder}")
        print(f"sweep '{spec.name}' in {folder} (run the same command again to continue it)", file=sys.stderr)
    at = next((i for i, a in enumerate(args) if "=" in a and not a.startswith("-")), len(args))
    args = [*args[:at], *extra, *args[at:]]
    if any(a in ("-m", "--multirun", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc") for a in args):
        return args  # already multirun, or only printing (Hydra allows one mode)
    return ["-m", *args]
