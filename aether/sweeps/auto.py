"""`+recipe=auto` and `+sweep=auto`, and the command-line preparation of every `+sweep=NAME`.

recipe=auto: the dataset doctor's recommendations (strategy, backbone, input size, batch size,
epochs, class weights or the balanced sampler) plus a learning rate and a device set-up from a hardware probe (GPU
count and memory, CPU cores) become overrides placed before the user's own (the user's win).
Each choice is printed with a one-line reason and recorded under `auto:` in the run's config.
Then the candidates of the budgeted search (aether.sweeps.candidates) are planned and passed
on as `auto.plan.NAME`; the run itself measures them (aether.sweeps.auto_search).
"""

from __future__ import annotations

import hashlib
import sys
from typing import Any, Dict, List, Tuple

from aether.sweeps.candidates import BASE_LR, default_budget, learning_rate as _lr, plan
from aether.sweeps.space import format_value

# recommendation -> the config key (or group) it sets
AUTO_KEYS = {"strategy": "strategy", "model": "model", "image_size": "data.image_size", "batch_size": "data.batch_size",
             "epochs": "trainer.max_epochs", "augment": "data/augment", "class_weights": "loss.class_weights",
             "sampler": "data.sampler", "lr": "optimizer.lr",
             "trainer": "trainer", "budget": "auto.budget_minutes"}
SEARCH_OFF = ("-m", "--multirun", "--cfg", "-c", "--info", "-i")  # a sweep, or only printing: no search


def learning_rate(strategy: str, batch_size: int, scratch: bool = False) -> Dict[str, Any]:
    base = BASE_LR["scratch" if scratch else strategy] if (scratch or strategy in BASE_LR) else 1e-4
    what = ("from scratch, one-cycle: a high peak LR that anneals" if scratch else
            {"linear_probe": "only the head trains, so a high LR converges in few epochs",
             "lora": "adapters start at zero and tolerate a larger LR than full weights",
             "full": "every pretrained weight moves: a small LR keeps the features"}.get(strategy, "a safe start"))
    return {"value": _lr("scratch" if scratch else strategy, batch_size),
            "reason": f"{strategy}: {what} ({base:g} at batch 32, scaled to batch {batch_size})"}


def devices(hw: Dict[str, Any]) -> Dict[str, Any]:
    gpus = int(hw.get("gpus", 0))
    if gpus > 1:
        return {"value": "ddp", "reason": f"{gpus} GPUs: data-parallel on all of them"}
    if gpus == 1:
        return {"value": "gpu", "reason": f"1 GPU with {hw.get('gpu_memory_gb')} GiB: bf16 mixed precision"}
    return {"value": "default", "reason": f"no GPU: {hw.get('cpus')} CPU cores, 32-bit"}


def _user_values(overrides: List[str]) -> Dict[str, str]:
    out = {}
    for o in overrides:
        if "=" in o and not o.startswith(("hydra.", "+recipe=", "recipe=")):
            key, value = o.lstrip("+~").split("=", 1)
            out[key] = value
    return out


def _weights_check(rc: Any, user: Dict[str, str]):  # type: ignore[no-untyped-def]
    """model preset -> where its pretrained weights would come from, given what the user set."""
    from aether.models.weights import weights_available

    if rc.model.weights:  # their file: the pretrained branch, with their model
        return lambda name: "file"
    if any(k == "model" or k.startswith("model.") for k in user):
        mine = weights_available(rc.model.name) if rc.model.pretrained else None
        return lambda name: mine
    return weights_available


def recommendations(overrides: List[str]) -> Tuple[Dict[str, Dict[str, Any]], Dict[str, Any]]:
    """(recommendations, context: hardware, training-split size, median image side)."""
    from aether.config import hydra_setup
    from aether.doctor.inspect import examine
    from aether.doctor.recommend import hardware, recommend, train_size
    from aether.doctor.stats import size_stats

    _, rc = hydra_setup.compose_run(overrides)
    user = _user_values(overrides)
    hw = hardware()
    task = rc.task
    if task == "auto":
        from aether.tasks.base import detected_task

        task = detected_task(rc)[0]
    from aether import registry

    if registry.tasks.get(task).traits.get("auto") != "classification":  # boxes, masks, label sets
        return _encoder_only_recommendations(rc, task, user, hw)
    ex = examine(rc.data)
    counts = {c: n for c, n in ex.index.class_counts().items() if n}
    samples = ex.index.samples
    presplit = sum(s.split == "train" for s in samples) if ex.index.presplit else None
    n_train = train_size(len(samples), presplit, rc.data.val_fraction, rc.data.test_fraction)
    # the smallest class as it will be in the training split
    share = n_train / max(1, len(samples))
    train_counts = {c: max(1, round(n * share)) for c, n in counts.items()}
    sizes = size_stats(ex.records)
    rec = recommend(len(samples), train_counts, sizes, hw, num_train=n_train, weights=_weights_check(rc, user))
    scratch = rec["model"].get("pretrained") is False
    rec["lr"] = learning_rate(rec["strategy"]["value"], rec["batch_size"]["value"], scratch=scratch)
    rec["trainer"] = devices(hw)
    side = min(sizes.get("width", {}).get("median", 224), sizes.get("height", {}).get("median", 224))
    return rec, {"hw": hw, "num_train": n_train, "median_side": side, "rc": rc, "user": user}


def _encoder_only_recommendations(rc: Any, task: str, user: Dict[str, str],
                           hw: Dict[str, Any]) -> Tuple[Dict[str, Dict[str, Any]], Dict[str, Any]]:
    """Detection / segmentation data: the encoder and strategy (the task fits sizes and epochs)."""
    from aether.data.roots import RootGuard
    from aether.data.walk import walk_images
    from aether.doctor.inspect import resolve_source
    from aether.doctor.recommend import ENCODER_TASK_LR, recommend_encoder_only, train_size

    root = resolve_source(rc.data)[0]
    images = len(walk_images(root, RootGuard(str(root), rc.data.allow_outside_root)).images) if root else 0
    n_train = train_size(images, None, rc.data.val_fraction, rc.data.test_fraction)
    rec = recommend_encoder_only(task, n_train, hw, _weights_check(rc, user))
    rec["lr"] = {"value": ENCODER_TASK_LR["scratch" if rec["model"].get("pretrained") is False else "full"],
                 "reason": f"{task}: AdamW at the rate of the built-in {task} recipes"}
    rec["trainer"] = devices(hw)
    return rec, {"hw": hw, "num_train": n_train, "median_side": 224, "rc": rc, "user": user}


def _overrides(rec: Dict[str, Dict[str, Any]]) -> List[Tuple[str, List[str]]]:
    """(recommendation name, its overrides) for each recommendation."""
    from aether.doctor.recommend import as_overrides, scratch_overrides

    flat = as_overrides(rec)
    by_key = {AUTO_KEYS[k]: k for k in AUTO_KEYS}
    out: Dict[str, List[str]] = {}
    for o in flat:
        key = o.split("=", 1)[0]
        name = by_key.get(key) or "model"  # model.pretrained=false & co belong to the from-scratch model choice
        if o in scratch_overrides():
            name = "model"
        out.setdefault(name, []).append(o)
    out["lr"] = [f"optimizer.lr={rec['lr']['value']}"]
    out["trainer"] = [f"trainer={rec['trainer']['value']}"]
    if "budget" in rec:
        out["budget"] = [f"auto.budget_minutes={rec['budget']['value']}"]
    return list(out.items())


def _mine(name: str, user: Dict[str, str]) -> str:
    """The user's own value for recommendation `name`, or ''."""
    key = AUTO_KEYS[name]
    if key in user:
        return user[key]
    if name == "model":
        for k in ("model.name", "model.weights"):
            if k in user:
                return user[k] if k == "model.name" else f"{user.get('model.name', 'model')} + {user[k]}"
    return ""


def auto_recipe(args: List[str], overrides: List[str]) -> List[str]:
    """The arguments with the recommendations (and their reasons, under `auto:`) put first, and
    the candidates of the budgeted search as `auto.plan.NAME`."""
    if any(o.startswith("++auto.") for o in overrides):
        return args  # already chosen: a sweep trial or a DDP rank re-launched with the first choices
    rec, ctx = recommendations(overrides)
    user = ctx["user"]
    search = (user.get("auto.search", "true").lower() in ("true", "1", "yes")
              and not any(a in SEARCH_OFF for a in args) and not any(k.startswith("sweep") for k in user))
    if search:
        rec["budget"] = default_budget(ctx["num_train"], ctx["hw"])
    chosen: List[str] = []
    print("recipe=auto - the dataset doctor chose, for this data and this machine:", file=sys.stderr)
    for rname, ovs in _overrides(rec):
        r = rec[rname]
        mine = _mine(rname, user)
        shown = mine or r["value"]
        print(f"  {AUTO_KEYS[rname]} = {shown}{' (yours)' if mine else ''}: "
              f"{'your choice' if mine else r['reason']}", file=sys.stderr)
        if mine and rname == "model":  # their model; without loadable weights it trains from scratch
            chosen += [o for o in ovs if o.split("=", 1)[0] not in user and not o.startswith("model=")]
        if not mine:
            chosen += [o for o in ovs if o.split("=", 1)[0] not in user]
            note = f"{r['value']}: {r['reason']}"
            chosen.append(f"++auto.{rname}={format_value(note)}")
    if search:
        cands = plan(rec, user, ctx["num_train"], ctx["median_side"], gpu=ctx["hw"].get("gpus", 0) > 0,
                     model_label=user.get("model.name") or user.get("model") or "")
        print(f"  the search will try {len(cands)} candidate(s) on the validation split, then finish the best:",
              file=sys.stderr)
        for c in cands:
            print(f"    {c.name}: {c.reason}", file=sys.stderr)
            chosen.append(f"++auto.plan.{c.name}={format_value(c.encode())}")
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
    lr = raw["optimizer"]["lr"]
    if lr == "auto":  # the search itself varies the rate: around the optimizer's default
        from aether import registry

        lr = registry.optimizers.get(raw["optimizer"]["name"]).config.model_fields["lr"].default
    lr = float(lr)
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
    printing = any(a in ("--cfg", "-c", "--info", "-i", "--shell-completion", "-sc") for a in args)
    args, storage_extra = prepare_storage(args, spec, check=not printing)
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
    extra += storage_extra
    at = next((i for i, a in enumerate(args) if "=" in a and not a.startswith("-")), len(args))
    args = [*args[:at], *extra, *args[at:]]
    if any(a in ("-m", "--multirun", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc") for a in args):
        return args  # already multirun, or only printing (Hydra allows one mode)
    return ["-m", *args]


def prepare_storage(args: List[str], spec: Any, check: bool = True) -> Tuple[List[str], List[str]]:
    """`sweep.storage` made safe to save and checked before any trial runs: a password (from a sweep
    file; the command line's is taken out first, aether.cli.prepare_train) moves to PGPASSWORD, a
    relative SQLite path becomes absolute (trials may run elsewhere), and a PostgreSQL server is
    reached once (seconds, not a failed sweep later). Returns (args, overrides to add)."""
    from pathlib import Path

    from aether.errors import AetherError
    from aether.sweeps.spec import SQLITE, mask_url, secure_storage_arg

    url = spec.storage
    if not url:
        return args, []
    clean = secure_storage_arg(f"sweep.storage={url}").split("=", 1)[1]
    if clean.lower().startswith(SQLITE):
        path = Path(clean[len(SQLITE):]).expanduser()
        if not path.parent.is_dir():
            raise AetherError(f"sweep.storage={url}: the folder {path.parent} does not exist; create it or give "
                              "another sqlite:///PATH")
        clean = f"{SQLITE}{path.resolve()}"
    elif check:
        from aether.sweeps.study import rdb_storage

        rdb_storage(clean)  # AetherError naming the driver's extra, or why the server cannot be reached
        print(f"sweep '{spec.name}': study '{spec.study or spec.name}' in {mask_url(clean)}", file=sys.stderr)
    if clean == url:
        return args, []
    keys = [i for i, a in enumerate(args) if a.lstrip("+~").startswith("sweep.storage=")]
    if not keys:  # set in a sweep file: overridden with the safe value
        return args, [f"++sweep.storage={format_value(clean)}"]
    args = list(args)
    for i in keys:
        args[i] = f"{args[i].split('=', 1)[0]}={format_value(clean)}"
    return args, []
