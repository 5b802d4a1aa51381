"""Shared fixtures: generated image folders, the REAL shipped configs shrunk for CPU tests.

Following lightning-hydra-template: tests compose the actual conf/ and recipes/, then shrink
them (tiny model, small images, one or two epochs), so they prove the shipped files work.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")

REPO = Path(__file__).resolve().parents[1]
AETHER = str(Path(sys.executable).parent / "aether")

# Small and fast on 2 CPU cores; every test run starts from these on top of a real recipe.
SHRINK = [
    "model=test_convnext",
    "data.image_size=32",
    "data.batch_size=16",
    "data.num_workers=0",
    "trainer.max_epochs=2",
    "trainer.progress=plain",
    "trainer.early_stopping.enabled=false",
    # the post-test analysis (galleries, heatmaps, cleanlab, bootstrap) costs seconds per run;
    # the tests of its content turn it on (analysis.enabled=true), the rest need only the run
    "analysis.enabled=false",
]

COLORS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 60, 220)}


def draw(color: Tuple[int, int, int], seed: int, size: int = 40):  # type: ignore[no-untyped-def]
    """A noisy image whose dominant colour is the class: learnable in a couple of epochs."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    jitter = tuple(max(0, min(255, c + rng.randint(-30, 30))) for c in color)
    img = Image.new("RGB", (size + rng.randint(0, 8), size), jitter)
    d = ImageDraw.Draw(img)
    for _ in range(3):
        x, y = rng.randint(0, size - 8), rng.randint(0, size - 8)
        d.ellipse([x, y, x + rng.randint(4, 12), y + rng.randint(4, 12)],
                  fill=tuple(rng.randint(0, 255) for _ in range(3)))
    return img


def make_folder(root: Path, per_class: int = 20, classes: Sequence[str] = tuple(COLORS), ext: str = ".png") -> Path:
    for ci, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            draw(COLORS.get(name, (30 * ci, 100, 200)), seed=ci * 1000 + i).save(root / name / f"{name}_{i:03d}{ext}")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "imgs")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # one cache per test session (the digits sample is materialised once), never ~/.cache
    cache = tmp_path_factory.getbasetemp() / "aether-cache"
    monkeypatch.setenv("AETHER_CACHE", str(cache))


def compose_raw(overrides: Sequence[str]) -> Dict:
    from omegaconf import OmegaConf

    from aether.config import hydra_setup
    from aether.config.preflight import rewrite_data_shorthand

    cfg = hydra_setup.compose(rewrite_data_shorthand(list(overrides)))
    raw = OmegaConf.to_container(cfg, resolve=True)
    raw.pop("hydra", None)
    return raw


def run_in_process(run_dir: Path, overrides: Sequence[str]):  # type: ignore[no-untyped-def]
    """Train through the same code path as the CLI (minus Hydra's process-level set-up)."""
    from aether.config.validate import validate
    from aether.run import fit_and_report

    raw = compose_raw([*SHRINK, *overrides])
    rc = validate(raw)
    fit_and_report(rc, raw, run_dir, run_name="test")
    return rc


def run_cli(args: List[str], cwd: Path, timeout: int = 600, env: Dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([AETHER, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)


def wandb_offline_run(run_dir: Path) -> Dict[str, Any]:
    """What an offline W&B run recorded: {"config": {key: value}, "summary": {key: value},
    "artifacts": [(name, type)], "files": its files/ folder}. wandb >= 0.19 writes config and
    summary only into run-*.wandb (records in LevelDB's log format: 32 KiB blocks of chunks with
    a 7-byte header crc32/length/type), which this reads as `wandb sync` would."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    (offline,) = (Path(run_dir) / "wandb").glob("offline-run-*")
    (log_file,) = offline.glob("run-*.wandb")
    data, block, pos, records, partial = log_file.read_bytes(), 32768, 7, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + n], pos + 7 + n
        if kind == 1:
            records.append(chunk)
        elif kind in (2, 3):
            partial = (b"" if kind == 2 else partial) + chunk
        elif kind == 4:
            records.append(partial + chunk)
    out: Dict[str, Any] = {"config": {}, "summary": {}, "artifacts": [], "files": offline / "files"}
    for raw in records:
        rec = pb.Record()
        rec.ParseFromString(raw)
        kind = rec.WhichOneof("record_type")
        if kind in ("config", "summary"):
            for item in getattr(rec, kind).update:
                key = item.key or ".".join(item.nested_key)
                out[kind][key] = json.loads(item.value_json)
        elif kind == "artifact":
            out["artifacts"].append((rec.artifact.name, rec.artifact.type))
    return out
