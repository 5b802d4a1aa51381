"""The `aether` command: `aether [VERB] overrides...` (VERB defaults to `train`).

Only light modules are imported here; torch, Lightning and timm are imported once a run
really starts, so `--help`, `list` and config errors answer fast.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from aether.about import __version__
from aether.errors import AetherError

HELP = f"""aether {__version__} - declarative fine-tuning of vision models

usage:
  aether [train] [+recipe=NAME] [data=PATH] [key=value ...]   train, evaluate, report
  aether -m [+recipe=NAME] key=a,b ...                         sweep (Hydra multirun)
  aether +recipe=NAME +sweep=lora_optuna|full_optuna|auto ...  Optuna search, resumable (conf/sweep/)
  aether inspect data=PATH [run=RUN] [--strict]               the dataset doctor: check, describe, recommend
                                                               (run=: that run's suspected label errors too)
  aether export run=RUN [format=bento|onnx|torchscript|openvino|tensorrt] [quantize=int8|fp16]
                                                               BentoML store + RUN/bento/, or a checked package
  aether predict run=RUN images=PATH [out=DIR] [top_k=5]       classify files -> predictions.csv + .json
  aether explain run=RUN images=PATH [method=gradcam]         class-activation heatmaps -> RUN/explain/
  aether benchmark run=RUN [formats=pytorch,onnx,...]          size, load time, latency, throughput, accuracy per format
  aether runs [DIR] | runs compare RUN RUN... [out=FILE.png]    runs as a table; configs, metrics, curves side by side
  aether list recipes|models|strategies|optimizers|schedulers|loggers|adapters|backbones|tasks|groups
  aether list strategy lora | task detection | data | trainer | config ...   options: type, default, meaning
  aether weights pull model=NAME[,NAME...] | import FILE model=NAME | list   pretrained weights (HF cache)
  aether --help | --version

examples:
  aether +recipe=quickstart                      # embedded real digits sample, CPU, about a minute
  aether +recipe=resnet_full data=./imgs model=convnext_atto optimizer.lr=3e-4 trainer.max_epochs=5
  aether +recipe=resnet_full data=./imgs model.name=efficientnet_b2 model.weights=./b2.safetensors
  aether resume=outputs/2026-11-26/12-00-00 trainer.max_epochs=20     # continue a run
  aether +recipe=quickstart --cfg job            # print the composed config and exit

config:  groups data, data/augment, model, strategy, optimizer, scheduler, trainer, logger select
         options (`model=vit_small`); `+recipe=NAME` overlays a recipe from ./recipes or the
         built-in ones; `key=value` sets any value; `hydra.run.dir=DIR` chooses the run folder.
         Hydra's flags (-m, --cfg, --info, -cd, --hydra-help) work as usual.
weights: model.pretrained=true downloads timm's weights into the Hugging Face cache (HF_HOME) once;
         offline (no network, HF_HUB_OFFLINE=1 or offline=true) they come from that cache only.
"""

VERBS: Dict[str, Callable[[List[str]], int]] = {}


def verb(name: str) -> Callable[[Callable[[List[str]], int]], Callable[[List[str]], int]]:
    def deco(fn: Callable[[List[str]], int]) -> Callable[[List[str]], int]:
        VERBS[name] = fn
        return fn

    return deco


def _err(msg: str) -> None:
    print(f"aether: error: {msg}", file=sys.stderr)


def internal_error(exc: BaseException, run_dir: Path) -> str:
    """The one line for an exception no check foresaw: what was raised and where, with its full
    traceback written to RUN/error.log (a user can read and report it; the console stays one line)."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    where = ""
    if frames:
        last = frames[-1]
        parts = Path(last.filename).parts
        short = "/".join(parts[parts.index("site-packages") + 1:] if "site-packages" in parts else parts[-2:])
        where = f" (in {short}:{last.lineno}, {last.name})"
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    log = run_dir / "error.log"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        log.write_text(text, encoding="utf-8")
        kept = f"the traceback is in {log}"
    except OSError:
        kept = "set AETHER_TRACEBACK=1 for the traceback"
    first = str(exc).splitlines()[0] if str(exc) else ""
    return (f"unexpected {type(exc).__name__}: {first}{where}; {kept}. This is a bug in Aether or a library "
            "it uses, not in your input: please report it with that file")


def _notes(notes: List[str]) -> None:
    """Pre-flight notes (options dropped when a part was switched), for commands that run no
    training: `train` logs them from aether.launch.train, once per run, into config.yaml too."""
    for note in notes:
        print(f"aether: note: {note}", file=sys.stderr)


@verb("list")
def cmd_list(args: List[str]) -> int:
    from aether.listing import show

    return show(args)


@verb("inspect")
def cmd_inspect(args: List[str]) -> int:
    """The dataset doctor: `aether inspect data=PATH [run=RUN] [--strict] [hydra.run.dir=DIR]`;
    run=RUN adds the suspected label errors that run found (RUN/label_issues.csv) in this data."""
    import time
    from pathlib import Path

    from aether.config import hydra_setup, preflight

    strict = "--strict" in args
    runs = [a.split("=", 1)[1] for a in args if a.startswith("run=")]  # a run's suspected label errors
    args = preflight.rewrite_data_shorthand([a for a in args if a != "--strict" and not a.startswith("run=")])
    out = [a.split("=", 1)[1] for a in args if a.startswith("hydra.run.dir=")]
    overrides = [a for a in args if not a.startswith("hydra.")]
    _notes(preflight.check(overrides))
    _, rc = hydra_setup.compose_run(overrides)
    out_dir = Path(out[0]) if out else Path("outputs") / time.strftime("%Y-%m-%d") / time.strftime("%H-%M-%S-inspect")
    from aether.paths import require_writable

    require_writable(out_dir, "the output folder", "choose a writable one with hydra.run.dir=DIR")

    from aether.doctor.inspect import build_report, examine, inspect_structured, print_summary

    issues = None
    if runs:
        from aether.doctor.label_issues import run_label_issues

        issues = run_label_issues(runs[-1], rc.data.path)  # a bad run= fails before the doctor's work
    report = inspect_structured(rc.data, out_dir) or build_report(examine(rc.data), out_dir)
    if issues is not None:
        from aether.doctor.label_issues import add_label_issues

        add_label_issues(report, issues, out_dir)
    print_summary(report, out_dir)
    if report["errors"]:
        return 2
    return 1 if strict and report["warnings"] else 0


def _auto_recipe(args: List[str], overrides: List[str]) -> List[str]:
    """`recipe=auto`: the doctor's and the hardware probe's choices, with reasons (aether.sweeps.auto)."""
    from aether.sweeps.auto import auto_recipe

    return auto_recipe(args, overrides)


def prepare_train(args: List[str]) -> Tuple[List[str], List[str]]:
    """Everything a training checks and rewrites before Hydra starts, for `aether train` and
    the Python API (aether.api.train): the data shorthand, `-cd` folders, every override
    (pre-flight and trust checks), recipe=auto's plan, the launcher, an Optuna sweep's set-up,
    resume's folder, the run folder. Returns (the arguments for Hydra, the pre-flight notes)."""
    from aether.config import hydra_setup, preflight

    args = preflight.rewrite_data_shorthand(args)
    from aether.sweeps.spec import secure_storage_arg

    # a database password given in sweep.storage's URL goes to PGPASSWORD here, before anything records args
    args = [secure_storage_arg(a) if a.lstrip("+~").startswith("sweep.storage=") else a for a in args]
    overrides = [a for a in args if not a.startswith("-") and "=" in a]
    hydra_setup.check_config_dirs(args)  # -cd DIR: Hydra reads it unchecked, so check it first
    notes = preflight.check(overrides)
    if any(o in ("+recipe=auto", "recipe=auto") for o in overrides):
        args = _auto_recipe(args, overrides)
        overrides = [a for a in args if not a.startswith("-") and "=" in a]
        notes = preflight.check(overrides)
    from aether.sweeps.launchers import check_launcher

    check_launcher(args)
    if any(o.lstrip("+").startswith("sweep=") for o in overrides):  # Optuna: multirun, space checked, resumable dir
        from aether.sweeps.auto import prepare_sweep

        args = prepare_sweep(args, overrides)
    resume = [o.split("=", 1)[1] for o in overrides if o.startswith("resume=")]
    if resume and resume[0] not in ("", "null") and not any(o.startswith("hydra.run.dir=") for o in overrides):
        args.append(f"hydra.run.dir={resume[0]}")  # a resumed run keeps writing into its own folder
    from aether.paths import check_output_dir
    from aether.training.run_lock import check_run_folder

    check_output_dir(args)  # an unwritable run folder fails here, in one line, not inside Hydra
    check_run_folder(args)  # before Hydra writes .hydra/ into a folder another run holds, or a resume can't use
    hydra_setup.install()
    return args, notes


@verb("train")
def cmd_train(args: List[str]) -> int:
    from aether.launch import run_secondary_rank
    from aether.ranks import is_secondary_rank

    if is_secondary_rank():  # a DDP rank > 0: rank 0's config and run folder, no Hydra
        return run_secondary_rank(args)

    args, notes = prepare_train(args)
    if any(a in ("--cfg", "-c", "--info", "-i") for a in args):
        _notes(notes)  # Hydra only prints: aether.launch.train, which logs the notes, does not run

    import hydra

    from aether.paths import builtin_conf_dir

    def task(cfg):  # type: ignore[no-untyped-def]
        from aether.launch import train  # the heavy imports start here

        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        try:
            return train(cfg)
        except AetherError as err:
            _err(str(err))
            if HydraConfig.get().mode == RunMode.MULTIRUN:
                raise  # one trial of a sweep failed: the sweeper records it and goes on
            sys.exit(2)
        except Exception as exc:  # a bug (ours or a library's): one line here, the traceback in the run
            if HydraConfig.get().mode == RunMode.MULTIRUN or os.environ.get("AETHER_TRACEBACK"):
                raise
            _err(internal_error(exc, Path(HydraConfig.get().runtime.output_dir)))
            sys.exit(1)

    # Hydra reads sys.argv: hand it the arguments without the verb, data= rewritten.
    sys.argv = [sys.argv[0]] + args
    hydra.main(config_path=str(builtin_conf_dir()), config_name="config", version_base=None)(task)()
    return 0


@verb("weights")
def cmd_weights(args: List[str]) -> int:
    """`aether weights pull model=NAME[,NAME...]`, `import FILE model=NAME`, `list`: the HF cache."""
    from aether.models import weights

    sub, rest = (args[0], args[1:]) if args else ("", [])
    if sub == "list":
        _options("weights list", rest, {}, [])
        rows = weights.list_cached()
        print(f"{len(rows)} model{'s' if len(rows) != 1 else ''} with weights in {weights.cache_dir()}")
        for r in rows:
            print(f"  {r['model']:<36} {r['repo']:<44} {r['size'] / 2**20:8.1f} MiB  {r['path']}")
        return 0
    if sub == "pull":
        opts = _options("weights pull", rest, {"model": "timm model name(s) or model presets, comma-separated"},
                        ["model"])
        for name in opts["model"].split(","):
            path = weights.fetch(name)
            print(f"{name}: {path} ({path.stat().st_size / 2**20:.1f} MiB)")
        return 0
    if sub == "import":
        files = [a for a in rest if "=" not in a]
        opts = _options("weights import", [a for a in rest if "=" in a], {"model": "timm model name or preset"},
                        ["model"])
        if len(files) != 1:
            raise AetherError("weights import: expected one FILE (.safetensors or a plain state dict) and model=NAME")
        path = weights.import_file(files[0], opts["model"])
        print(f"{opts['model']}: imported {files[0]} -> {path}; model.pretrained=true now uses it offline")
        return 0
    from aether.suggest import did_you_mean

    raise AetherError(f"weights: expected pull, import or list, got '{sub}'{did_you_mean(sub, ['pull', 'import', 'list'])}")


# --- deployment: export / predict (aether.deploy) ---------------------------------------------

def _options(verb_name: str, args: List[str], allowed: Dict[str, str], required: List[str]) -> Dict[str, str]:
    """`key=value` arguments of a verb; unknown keys get the valid ones and a did-you-mean."""
    from aether.suggest import did_you_mean

    opts: Dict[str, str] = {}
    for a in args:
        key, sep, value = a.partition("=")
        if not sep or key not in allowed:
            hint = did_you_mean(key, allowed) if sep else ""
            raise AetherError(f"{verb_name}: unexpected argument '{a}'{hint}; expected key=value with keys: "
                              + ", ".join(f"{k} ({v})" for k, v in allowed.items()))
        opts[key] = value
    missing = [k for k in required if not opts.get(k)]
    if missing:
        raise AetherError(f"{verb_name}: missing {', '.join(k + '=...' for k in missing)}")
    return opts


def _number(verb_name: str, opts: Dict[str, str], key: str, default: float, kind: type = int) -> float:
    try:
        value = kind(opts.get(key, default))
    except ValueError:
        expected = "an integer" if kind is int else "a number"
        raise AetherError(f"{verb_name}: {key}={opts[key]!r} is not {expected}") from None
    if value <= 0:
        raise AetherError(f"{verb_name}: {key}={opts[key]!r} must be greater than 0")
    return value


def _probability(verb_name: str, opts: Dict[str, str], key: str) -> Optional[float]:
    """A probability option in (0, 1], or None when not given."""
    if key not in opts:
        return None
    value = _number(verb_name, opts, key, 0, float)
    if value > 1:
        raise AetherError(f"{verb_name}: {key}={opts[key]!r} must be a probability in (0, 1]")
    return value


EXPORT_OPTIONS = {"run": "a finished run folder",
                  "format": "bento (default), onnx, torchscript, openvino or tensorrt",
                  "quantize": "int8 (onnx: static, calibrated on the training split; openvino: nncf) or fp16",
                  "min_agreement": "lowest top-1 agreement with PyTorch on the test split (0.99; int8 0.95)",
                  "on_mismatch": "below min_agreement: fail (default; the file is not kept) or warn",
                  "agreement": "measure agreement on the run's test split, true (default) or false",
                  "calibration_images": "INT8: training images to calibrate on (100)",
                  "name": "model name in the BentoML store", "max_upload_mb": "upload limit",
                  "batching": "adaptive batching, true/false",
                  "score_threshold": "detection: lowest box score answered",
                  "backend": "what serves: torch (default), onnx (onnxruntime) or openvino",
                  "explain": "true adds the service's /explain heatmap endpoint (classifiers); default false",
                  "explain_method": "the /explain heatmaps: gradcam (default), layercam or gradcam++",
                  "tta": "classification: none, flip or multi_crop (default: the run's test.tta)",
                  "reject_below": "classification: label `unknown` below this top probability"}


def export_run(args: List[str]) -> Tuple[str, Dict[str, Any]]:
    """`aether export`'s work without its printing, shared with the Python API (Run.export):
    the options checked, then the export; returns (format, what the export returned)."""
    opts = _options("export", args, EXPORT_OPTIONS, ["run"])
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    fmt = opts.get("format", "bento")
    package_opts = ("quantize", "min_agreement", "on_mismatch", "agreement", "calibration_images")
    if fmt != "bento":
        from aether.deploy.export_formats import export_package

        agreement = opts.get("agreement", "true").lower()
        if agreement not in ("true", "false"):
            raise AetherError(f"export: agreement={opts['agreement']!r}: expected true or false")
        try:
            min_agreement = float(opts["min_agreement"]) if "min_agreement" in opts else None
        except ValueError:
            raise AetherError(f"export: min_agreement={opts['min_agreement']!r} is not a number") from None
        return fmt, export_package(opts["run"], fmt, quantize=opts.get("quantize") or None,
                                   min_agreement=min_agreement, on_mismatch=opts.get("on_mismatch", "fail"),
                                   agreement=agreement == "true",
                                   calibration_images=int(_number("export", opts, "calibration_images", 100)))
    given = [k for k in package_opts if k in opts]
    if given:
        raise AetherError(f"export: {'= '.join(given)}= {'apply' if len(given) > 1 else 'applies'} to "
                          "format=onnx|torchscript|openvino|tensorrt, not to format=bento")
    batching, explain = (opts.get(k, d).lower() for k, d in (("batching", "true"), ("explain", "false")))
    for key, value in (("batching", batching), ("explain", explain)):
        if value not in ("true", "false"):
            raise AetherError(f"export: {key}={opts[key]!r}: expected true or false")
    from aether.deploy.bento import export_bento

    return fmt, export_bento(opts["run"], name=opts.get("name"), batching=batching == "true",
                             max_upload_mb=_number("export", opts, "max_upload_mb", 20.0, float),
                             backend=opts.get("backend", "torch"),
                             score_threshold=_number("export", opts, "score_threshold", 0, float)
                             if "score_threshold" in opts else None, tta=opts.get("tta"),
                             reject_below=_probability("export", opts, "reject_below"),
                             explain=explain == "true", explain_method=opts.get("explain_method", "gradcam"))


@verb("export")
def cmd_export(args: List[str]) -> int:
    """`aether export run=RUN [format=bento|onnx|torchscript|openvino|tensorrt] [quantize=int8|fp16]
    [min_agreement=F] [on_mismatch=fail|warn] [name=NAME] [max_upload_mb=20] [batching=true]
    [backend=torch|onnx|openvino] [score_threshold=P] [explain=false]` (detection: boxes below P
    are left out; explain=true: the service's /explain endpoint answers Grad-CAM heatmaps)."""
    fmt, res = export_run(args)
    if fmt != "bento":
        if fmt == "onnx" and res.get("atol") is not None:
            print(f"wrote {res['path']} (dynamic batch; onnxruntime vs PyTorch max |d logit| = "
                  f"{res.get('parity_max_abs_diff', res['max_abs_diff']):.2e} <= {res['atol']:g})")
        else:
            print(f"wrote {res['path']}")
        if "top1_agreement" in res:
            print(f"agreement with PyTorch on the {res['images']} images of the run's {res['split']} split: "
                  f"{res.get('agreement_of', 'top-1')} {res['top1_agreement']:.4f} (min {res['min_agreement']:g}), "
                  f"{res.get('metric', 'accuracy')} PyTorch {res['metric_pytorch']:.4f} vs exported "
                  f"{res['metric_exported']:.4f}, max |d output| {res['max_abs_diff']:.2e}")
        print(f"wrote {res['json']}")
        if res.get("warning"):
            print(f"aether: warning: {res['warning']}; kept (on_mismatch=warn)", file=sys.stderr)
        return 0
    plan = res["batching"]
    print(f"{'stored' if res['created'] else 'already stored'} BentoML model {res['tag']} ({res['store_path']})\n"
          f"wrote {res['bento_dir']}/ (service.py, bentofile.yaml, aether_serve.json); {res['backend']} backend, "
          f"adaptive batching "
          f"{'on, max ' + str(plan['max_batch_size']) + ' per batch' if plan['enabled'] else 'off'}\n"
          f"serve it:  bentoml serve {res['bento_dir']}\n"
          f"try it:    curl -F image=@IMAGE localhost:3000/predict"
          + ("\n           curl -F image=@IMAGE localhost:3000/explain   (heatmap_png: base64 PNG)"
             if res.get("explain") else ""))
    return 0


@verb("runs")
def cmd_runs(args: List[str]) -> int:
    """`aether runs [DIR] [--json]`: every run under DIR (default outputs/) as a table;
    `aether runs compare RUN RUN... [out=FILE.png] [--json]`: configs' differences, test metrics
    side by side and the validation curves overlaid."""
    from pathlib import Path

    from aether.reporting import runs as R

    as_json = "--json" in args
    args = [a for a in args if a != "--json"]
    if args and args[0] == "compare":
        out = next((Path(a.split("=", 1)[1]) for a in args[1:] if a.startswith("out=")), Path("runs-compare.png"))
        cmp = R.compare([Path(a) for a in args[1:] if not a.startswith("out=")])
        png = R.curves_png(cmp, out)
        if as_json:
            print(json.dumps({k: v for k, v in cmp.items() if k != "history"} | {"curves": str(png)}, indent=2))
            return 0
        _print_compare(cmp, png)
        return 0
    unknown = [a for a in args[1:]] + [a for a in args[:1] if a.startswith("-")]
    if unknown:
        raise AetherError(f"aether runs: unexpected {' '.join(unknown)}; usage: aether runs [DIR] [--json] | "
                          "aether runs compare RUN RUN... [out=FILE.png]")
    root = Path(args[0]) if args else Path("outputs")
    rows = [R.summary(r) for r in R.find_runs(root)]
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    _print_runs(root, rows)
    return 0


def _print_runs(root: Any, rows: List[Dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{len(rows)} run(s) under {root}")
    for col in ("run", "recipe", "task", "model", "strategy", "test metric", "train min", "cost", "finished"):
        table.add_column(col, justify="right" if col in ("test metric", "train min", "cost") else "left")
    for r in rows:
        if "error" in r:
            table.add_row(escape(r["run"]), "", "", "", "", "", "", "", escape(r["error"]))
            continue
        metric = "-" if r["value"] is None else f"{r['metric']} {r['value']:.4f}"
        cost = "-" if r["cost"] is None else f"{r['cost']:.4f} {r['currency'] or ''}".strip()
        table.add_row(*(escape(str(v if v is not None else "-")) for v in (
            r["run"], r["recipe"], r["task"], r["model"], r["strategy"], metric, r["train_minutes"], cost, r["finished"])))
    Console(width=200).print(table)


def _print_compare(cmp: Dict[str, Any], png: Any) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from aether.reporting.runs import short_names

    names = short_names(cmp["runs"])
    console = Console(width=200)
    for title, rows, digits in (("test metrics", cmp["test"], True), ("config differences", cmp["config_differences"], False)):
        table = Table(title=title)
        table.add_column("key")
        for n in names:
            table.add_column(escape(n), justify="right")
        for key, values in rows.items():
            table.add_row(escape(key), *(escape("-" if v is None else f"{v:.4f}" if digits and isinstance(v, float)
                                                else str(v)) for v in values))
        console.print(table if rows else f"{title}: none")
    console.print(f"curves: {png}")


@verb("predict")
def cmd_predict(args: List[str]) -> int:
    """`aether predict run=RUN images=PATH[,PATH...] [out=DIR] [batch_size=32] [top_k=5] [device=cpu]
    [score_threshold=P] [tta=none|flip|multi_crop] [reject_below=P]`; multilabel, detection and
    segmentation runs write their own layout."""
    opts = _options("predict", args, {"run": "a finished run folder",
                                      "images": "folder, file or list.txt; comma-separated",
                                      "out": "output folder", "batch_size": "images per forward pass",
                                      "top_k": "classes per prediction", "device": "cpu, cuda, ...",
                                      "score_threshold": "detection: lowest box score kept",
                                      "tta": "classification: none, flip or multi_crop (default: the run's test.tta)",
                                      "reject_below": "classification: label `unknown` below this top probability"},
                    ["run", "images"])
    from aether.deploy.predict import predict_images

    res = predict_images(opts["run"], opts["images"].split(","), out=opts.get("out"),
                         batch_size=int(_number("predict", opts, "batch_size", 32)),
                         top_k=int(_number("predict", opts, "top_k", 5)), device=opts.get("device"),
                         score_threshold=_number("predict", opts, "score_threshold", 0, float)
                         if "score_threshold" in opts else None, tta=opts.get("tta"),
                         reject_below=_probability("predict", opts, "reject_below"))
    print(f"{res['num_predicted']} of {res['num_files']} files {res.get('verb', 'classified')} in {res['seconds']:.1f} s -> "
          f"{res['out_dir']}/predictions.csv, predictions.json")
    for f in res["failed"]:
        print(f"  not classified: {f['path']}: {f['reason']} ({f['detail']})", file=sys.stderr)
    return 0


@verb("benchmark")
def cmd_benchmark(args: List[str]) -> int:
    """`aether benchmark run=RUN [formats=pytorch,onnx,...] [batch_sizes=1,8,32] [iters=30]`: every
    format x precision this machine runs, measured (RUN/benchmark.json, RUN/benchmark.png)."""
    opts = _options("benchmark", args, {"run": "a finished run folder (any task)",
                                        "formats": "comma-separated, e.g. pytorch,onnx,onnx-int8 (default: all)",
                                        "batch_sizes": "comma-separated batch sizes for throughput (1,8,32)",
                                        "iters": "timed batch-1 calls per format (30)"}, ["run"])
    from rich.console import Console
    from rich.table import Table

    from aether.deploy.benchmark import benchmark_run

    try:
        sizes = [int(b) for b in opts.get("batch_sizes", "1,8,32").split(",")]
    except ValueError:
        raise AetherError(f"benchmark: batch_sizes={opts['batch_sizes']!r}: expected integers, e.g. 1,8,32") from None
    if any(b < 1 for b in sizes):
        raise AetherError(f"benchmark: batch_sizes={opts['batch_sizes']!r}: expected integers >= 1")
    res = benchmark_run(opts["run"], formats=opts["formats"].split(",") if opts.get("formats") else None,
                        batch_sizes=sizes, iters=int(_number("benchmark", opts, "iters", 30)))
    table = Table(title=f"{res['run']} - {res['images']} test images, this machine")
    metric = next((r["metric"] for r in res["rows"] if r.get("metric")), "accuracy")
    for col in ("format", "size MB", "load s", "p50 ms", "p99 ms", "images/s (batch)", metric, "agreement"):
        table.add_column(col, justify="left" if col == "format" else "right")
    for r in res["rows"]:
        if not r["available"]:
            table.add_row(r["format"], "-", "-", "-", "-", "-", "-", "not here")
            continue
        agree = r.get("top1_agreement")
        table.add_row(r["format"], f"{r['bytes'] / 1e6:.2f}", f"{r['load_s']:.2f}", f"{r['latency_ms_p50']:.2f}",
                      f"{r['latency_ms_p99']:.2f}", f"{r['throughput_ips']:.0f} ({r['best_batch']})",
                      f"{r[metric]:.4f}", "-" if agree is None else f"{agree:.4f}")
    Console(width=160).print(table)
    for r in res["rows"]:
        if not r["available"]:
            print(f"  {r['format']}: {r['reason']}")
    rec = res["recommendation"]
    print(f"serve: {rec['format']} - {rec['reason']}" if rec["format"] else f"serve: {rec['reason']}")
    print(f"wrote {res['run']}/benchmark.json, benchmark.png")
    return 0


@verb("explain")
def cmd_explain(args: List[str]) -> int:
    """`aether explain run=RUN images=PATH[,PATH...] [out=DIR] [method=gradcam|layercam|gradcam++]
    [device=cpu]`: a class-activation heatmap per image (RUN/explain/ by default)."""
    opts = _options("explain", args, {"run": "a finished classification run folder",
                                      "images": "folder, file or list.txt; comma-separated",
                                      "out": "output folder (default RUN/explain)",
                                      "method": "gradcam (default), layercam or gradcam++",
                                      "device": "cpu, cuda, ..."}, ["run", "images"])
    from aether.deploy.explain import explain_images

    res = explain_images(opts["run"], opts["images"].split(","), out=opts.get("out"),
                         method=opts.get("method", "gradcam"), device=opts.get("device"))
    print(f"{res['num_explained']} of {res['num_files']} files explained ({res['method']}) -> "
          f"{res['out_dir']}/explanations.csv and one heatmap PNG per image")
    for f in res["failed"]:
        print(f"  not explained: {f['path']}: {f['reason']} ({f['detail']})", file=sys.stderr)
    return 0


def no_vendor_telemetry() -> None:
    """Aether sends nothing anywhere, nor do the libraries it drives: NNCF (export format=openvino
    quantize=int8) reports usage to Google Analytics unless told it runs in CI (NNCF_CI, its only
    off switch); OpenVINO's own converter sends only after an explicit opt-in."""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("NNCF_CI", "1")


def start_command(argv: List[str]) -> None:
    """What the `aether` command and the Python API (aether.api.train) set first."""
    import time

    from aether import about

    about.command_started = time.monotonic()  # `+recipe=auto`'s budget counts from here (start-up, data checks)
    # weights download only when online (aether.models.weights probes the hub when they are needed);
    # `offline=true` is set before anything imports huggingface_hub, which reads the variable once
    if any(a.lower() in ("offline=true", "offline=1", "offline=yes") for a in argv):
        os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")  # no telemetry
    no_vendor_telemetry()


def main(argv: Optional[List[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    start_command(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(HELP)  # a bare `aether` explains itself rather than starting a long run
        sys.exit(0)
    if argv[0] == "--version":
        print(f"aether {__version__}")
        sys.exit(0)
    name = "train"
    if argv[0] in VERBS:
        name, argv = argv[0], argv[1:]
    elif not argv[0].startswith(("-", "+", "~")) and "=" not in argv[0]:
        from aether.suggest import did_you_mean

        _err(f"unknown command '{argv[0]}'{did_you_mean(argv[0], VERBS)}; "
             f"commands: {', '.join(sorted(VERBS))} (or key=value overrides to train)")
        sys.exit(2)
    try:
        code = VERBS[name](argv)
    except AetherError as err:
        _err(str(err))
        sys.exit(2)
    sys.exit(code)
