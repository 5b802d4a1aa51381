"""Pretrained weights: found in huggingface_hub's standard cache, downloaded into it when online.

A timm model name resolves (through timm's pretrained_cfg) to a hub repo and file, e.g.
`test_convnext` -> timm/test_convnext.r160_in1k, model.safetensors. The cache is
huggingface_hub's (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub), so weights
fetched by timm, `hf download` or `aether weights pull` are shared, and a cache copied from a
connected machine works on an air-gapped one.

Offline means: HF_HUB_OFFLINE=1, or `offline=true` (which sets it), or the endpoint did not answer a
quick HEAD request. The probe exists because huggingface_hub, when the server is down and the file
is not cached, retries with back-off for the best part of a minute before giving up; one short
request without retries tells us in a second or two, and we then read the cache only.
Environment variables are read at call time, not at import, so HF_HOME / HF_ENDPOINT set by a test
or a caller after import still count.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from aether.errors import AetherError

DEFAULT_ENDPOINT = "https://huggingface.co"
PROBE_TIMEOUT_S = 3.0  # one HEAD request, no retries: enough for a slow link, short enough to fail fast
_TRUE = ("1", "on", "yes", "true")

# endpoint -> why it did not answer; a down hub is probed once per process, not once per model
_unreachable: Dict[str, str] = {}


@dataclass(frozen=True)
class HubWeights:
    model: str  # the timm model name as given
    repo: str  # hub repo id, e.g. timm/test_convnext.r160_in1k
    revision: str  # branch, tag or commit ("main" unless the hub id says name@rev)
    filenames: Tuple[str, ...]  # tried in order: safetensors first, then the pickle-free-loadable .bin


def cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.path.expandvars(os.environ["HF_HUB_CACHE"])).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def offline_reason() -> Optional[str]:
    """Why downloads are off by the user's choice, or None."""
    if (os.environ.get("HF_HUB_OFFLINE") or "").lower() in _TRUE:
        return "offline (HF_HUB_OFFLINE=1)"
    constants = sys.modules.get("huggingface_hub.constants")  # it reads the variable once, at import
    if constants is not None and constants.HF_HUB_OFFLINE:
        return "offline (HF_HUB_OFFLINE was set when huggingface_hub was imported)"
    return None


# ---------------------------------------------------------------- model name -> hub file


def _safe_alternative(filename: str) -> Optional[str]:
    if filename.endswith(".safetensors"):
        return None
    known = {"pytorch_model.bin": "model.safetensors", "open_clip_pytorch_model.bin": "open_clip_model.safetensors"}
    return known.get(filename, filename.rsplit(".", 1)[0] + ".safetensors")


def timm_name(name: str) -> str:
    """A timm model name; the name of a built-in model preset (conf/model/NAME.yaml) also works."""
    import timm

    if timm.models.is_model(name.split(".")[0]):
        return name
    import yaml

    from aether.paths import builtin_conf_dir

    preset = builtin_conf_dir() / "model" / f"{name}.yaml"
    if preset.is_file():
        return str((yaml.safe_load(preset.read_text(encoding="utf-8")) or {}).get("name", name))
    from aether.suggest import did_you_mean

    raise AetherError(f"model={name}: timm has no such model and there is no such model preset"
                      f"{did_you_mean(name.split('.')[0], timm.list_models())}")


def hub_source(name: str) -> HubWeights:
    """Where the hub keeps `name`'s pretrained weights (raises when timm knows none)."""
    import timm

    tname = timm_name(name)
    cfg = timm.models.get_pretrained_cfg(tname)
    hub_id = getattr(cfg, "hf_hub_id", None)
    if not hub_id:
        tags = timm.list_pretrained(tname.split(".")[0] + "*")
        raise AetherError(f"model '{tname}': timm knows no pretrained weights on the hub for it"
                          + (f"; pretrained tags: {', '.join(tags[:8])}" if tags else "")
                          + "; pass model.weights=FILE or set model.pretrained=false")
    repo, _, revision = hub_id.partition("@")
    first = getattr(cfg, "hf_hub_filename", None) or "pytorch_model.bin"
    safe = _safe_alternative(first)
    return HubWeights(tname, repo, revision or "main", tuple(f for f in (safe, first) if f))


# ---------------------------------------------------------------- cache and hub


def cached_path(src: HubWeights) -> Optional[Path]:
    """The cached file for `src` (the revision's snapshot), without any network."""
    from huggingface_hub import try_to_load_from_cache

    for filename in src.filenames:
        hit = try_to_load_from_cache(src.repo, filename, cache_dir=str(cache_dir()), revision=src.revision)
        if isinstance(hit, str):
            return Path(hit)
    return None


def _head(src: HubWeights) -> Tuple[Optional[str], Optional[str]]:
    """(the first of src.filenames the hub has, why not) with one short request per file, no retries."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

    base = endpoint()
    if base in _unreachable:
        return None, _unreachable[base]
    for filename in src.filenames:
        url = hf_hub_url(src.repo, filename, revision=src.revision, endpoint=base)
        try:
            get_hf_file_metadata(url, timeout=PROBE_TIMEOUT_S, endpoint=base, retry_on_errors=False)
            return filename, None
        except EntryNotFoundError:
            continue
        except HfHubHTTPError as exc:  # 401/403 gated, 404 repo, 5xx (an OSError too: caught first)
            return None, f"the hub at {base} refused {src.repo} ({str(exc).splitlines()[0][:160]})"
        except Exception as exc:  # refused, timed out, DNS, TLS, proxy: its type is in the message
            _unreachable[base] = f"the hub at {base} did not answer ({type(exc).__name__}: {str(exc)[:120]})"
            return None, _unreachable[base]
    return None, f"the hub at {base} has none of {', '.join(src.filenames)} in {src.repo}"


def weights_available(model_name: str) -> Optional[str]:
    """Where `model_name`'s pretrained weights would come from: "cache", "hub" (only when online and
    the hub has the file), or None (unknown model, no hub weights, or offline and not cached)."""
    try:
        src = hub_source(model_name)
    except AetherError:
        return None
    if cached_path(src) is not None:
        return "cache"
    if offline_reason() is None and _head(src)[0] is not None:
        return "hub"
    return None


class _Progress:
    """tqdm for downloads that also shows in logs and pipes (huggingface_hub's own bar hides itself
    when stderr is not a terminal); HF_HUB_DISABLE_PROGRESS_BARS=1 still turns it off."""

    def __new__(cls, *args: Any, **kwargs: Any):  # type: ignore[no-untyped-def]
        from huggingface_hub.utils import are_progress_bars_disabled
        from tqdm import tqdm

        kwargs.pop("name", None)
        kwargs.setdefault("file", sys.stderr)
        if not sys.stderr.isatty():
            kwargs.setdefault("mininterval", 2.0)  # a few lines in a log file, not thousands
        return tqdm(*args, disable=are_progress_bars_disabled(), **kwargs)


def _not_available(src: HubWeights, why: str) -> AetherError:
    where = cache_dir() / f"models--{src.repo.replace('/', '--')}"
    return AetherError(
        f"model '{src.model}': pretrained weights are not available offline - {why}, and {src.filenames[0]} is not "
        f"in the Hugging Face cache ({where}). To fix: on a connected machine run `aether weights pull "
        f"model={src.model}` and copy {cache_dir()} here (or set HF_HOME), or `aether weights import FILE "
        f"model={src.model}`, or pass model.weights=/path/to/model.safetensors; or set model.pretrained=false "
        "to train from scratch."
    )


def fetch(name: str, quiet: bool = False) -> Path:
    """The local file of `name`'s pretrained weights: from the cache, or downloaded into it with progress."""
    src = hub_source(name)
    why = offline_reason()
    filename = None
    if why is None:
        filename, why = _head(src)
    if filename is None:  # offline: the cache or a clear error, never a minute of retries
        hit = cached_path(src)
        if hit is None:
            raise _not_available(src, why or "offline")
        return hit
    from huggingface_hub import hf_hub_download

    if not quiet and cached_path(src) is None:
        print(f"downloading {src.repo}/{filename} from {endpoint()} into {cache_dir()}", file=sys.stderr)
    try:
        return Path(hf_hub_download(src.repo, filename, revision=src.revision, cache_dir=str(cache_dir()),
                                    endpoint=endpoint(), etag_timeout=PROBE_TIMEOUT_S, tqdm_class=_Progress))
    except Exception as exc:  # the hub answered the probe but the download failed
        hit = cached_path(src)
        if hit is not None:
            return hit
        raise _not_available(src, f"the download failed ({type(exc).__name__}: {str(exc)[:200]})") from None


def pretrained_overlay(name: str) -> Dict[str, Any]:
    """timm's `pretrained_cfg_overlay` that loads `name`'s weights through our pickle-free reader, so
    timm's own filtering (classifier drop, position-embedding resize) applies as for its downloads."""
    from aether.models.backbone import read_state_dict

    path = fetch(name)
    return {"state_dict": read_state_dict(str(path), what=f"cached weights of '{name}'")}


# ---------------------------------------------------------------- import / list


def _fits(src: HubWeights, sd: Dict[str, Any], label: str) -> None:
    """Load `sd` into `src.model` the way a pretrained run will (timm's pretrained path): raises if it does not fit."""
    import timm

    try:
        timm.create_model(src.model, pretrained=True, pretrained_cfg_overlay={"state_dict": sd})
    except (RuntimeError, KeyError, ValueError) as exc:
        raise AetherError(f"{label}: does not fit model '{src.model}': {str(exc)[:500]}") from None


def import_file(path: str, name: str) -> Path:
    """Put a local weights file where the cache expects `name`'s hub weights (blobs/, snapshots/<rev>/,
    refs/<revision>), after checking it is pickle-free and fits the model. Returns the snapshot path."""
    from safetensors.torch import save_file

    from aether.models.backbone import read_state_dict

    label = f"weights import {path}"
    src = hub_source(name)
    sd = read_state_dict(path, what=label)  # safetensors or weights_only torch.load: never runs pickle
    _fits(src, sd, label)
    repo_dir = cache_dir() / f"models--{src.repo.replace('/', '--')}"
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    tmp = repo_dir / "blobs" / f".import-{os.getpid()}.incomplete"
    # re-saved as safetensors from the checked tensors (a .pt state dict too): the cache only ever holds safetensors
    save_file({k: v.detach().contiguous().clone() for k, v in sd.items()}, str(tmp))
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    blob = repo_dir / "blobs" / digest
    os.replace(tmp, blob)
    revision = hashlib.sha1(f"aether-import:{digest}".encode()).hexdigest()  # a commit-like id of this content
    snapshot = repo_dir / "snapshots" / revision / src.filenames[0]
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    if snapshot.is_symlink() or snapshot.exists():
        snapshot.unlink()
    try:
        snapshot.symlink_to(Path("..") / ".." / "blobs" / digest)
    except OSError:  # no symlinks (some Windows set-ups): huggingface_hub then keeps copies too
        os.replace(blob, snapshot)
    ref = repo_dir / "refs" / src.revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    previous = ref.read_text().strip() if ref.is_file() else None
    ref.write_text(revision)
    if previous and previous != revision:
        print(f"refs/{src.revision} of {src.repo} pointed at {previous}; it now points at the imported file "
              f"(that snapshot is kept)", file=sys.stderr)
    return snapshot


def list_cached() -> List[Dict[str, Any]]:
    """Model repos in the cache that hold weights: model, repo, size (bytes), path of the weights file."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(cache_dir())
    except CacheNotFound:
        return []
    rows = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        for rev in sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True):
            files = [f for f in rev.files if f.file_name.endswith((".safetensors", ".bin", ".pth", ".npz"))]
            if files:
                model = repo.repo_id.split("/", 1)[1] if repo.repo_id.startswith("timm/") else "-"
                rows.append({"model": model, "repo": repo.repo_id, "size": sum(f.size_on_disk for f in files),
                             "path": str(files[0].file_path), "refs": sorted(rev.refs)})
                break  # the newest revision with weights
    return rows
