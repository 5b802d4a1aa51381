"""Multi-process runs on Lightning's own engine (DDP, FSDP, torchrun, SLURM), and the Hydra traps.

Lightning's DDP launcher starts ranks 1..N-1 by re-running the command line. Under Hydra that
means each rank would compose its own config (a second `${now:...}` run folder, `recipe=auto`
asking the dataset doctor again, a `-m` sweep re-launching every trial) and write its own
.hydra/ folder and log. Aether avoids all of it:

* rank 0 writes `config.yaml` into the run folder and sets AETHER_RUN_DIR before Lightning
  starts the other ranks; a process that sees AETHER_RUN_DIR and a non-zero rank skips Hydra
  altogether and trains from THAT config and folder (`aether.launch.run_secondary_rank`);
* ranks started by an external launcher (torchrun, srun) have no AETHER_RUN_DIR: they compose
  the same command line without Hydra's run machinery, so they create no folder either;
* only global rank 0 writes: config, metrics, report, model (run.py); Lightning's checkpoint
  and loggers are rank-zero already (one W&B run);
* before a run, rank 0 restores the launcher's environment variables and closes the process
  group a previous run in the same process left behind, so each trial of a multirun sweep
  starts its own ranks.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

from aether.errors import AetherError
from aether.ranks import RUN_DIR_ENV, is_secondary_rank

log = logging.getLogger("aether")

# set by Lightning's launcher in the parent process; left behind they make the next Trainer
# believe an external launcher created its processes (and wait for ranks that never come)
_LAUNCHER_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "PL_GLOBAL_SEED")


_BASE_ENV: Optional[Dict[str, Optional[str]]] = None  # the launcher variables before this process's first run


def begin_run(run_dir: Path) -> None:
    """In the main process, before a run's Trainer: leave no trace of an earlier run in this
    process (a multirun sweep's previous trial) and tell the ranks Lightning will start where
    this run lives."""
    global _BASE_ENV
    if is_secondary_rank():
        return
    if _BASE_ENV is None:
        _BASE_ENV = {k: os.environ.get(k) for k in (RUN_DIR_ENV, *_LAUNCHER_ENV)}
    else:
        for k, v in _BASE_ENV.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if _BASE_ENV["LOCAL_RANK"] is None:  # the group was Lightning's (not torchrun's/srun's): close it
            _close_process_group()
    os.environ[RUN_DIR_ENV] = str(Path(run_dir).resolve())


def _close_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():  # the ranks Lightning started have finished
        dist.destroy_process_group()


def lightning_strategy(name: str, model: Any, accelerator: str = "auto") -> Any:
    """The Lightning strategy for `trainer.strategy`: FSDP wraps each transformer / residual
    block of the backbone (one flat unit for the whole model would gather every parameter at
    once, which is what FSDP is meant to avoid); every other name goes to Lightning as is, unless
    its strategy reads checkpoints with its own unpickler."""
    if name != "fsdp":
        _refuse_own_checkpoint_loader(name)
        return name
    blocks = block_classes(model)
    log.info("FSDP: one shard unit per %s", ", ".join(sorted(c.__name__ for c in blocks)) or "model (no blocks found)")
    cls = _cpu_fsdp_strategy() if accelerator == "cpu" else _safe_fsdp_strategy()
    return cls(auto_wrap_policy=blocks or None, state_dict_type="full")


def _refuse_own_checkpoint_loader(name: str) -> None:
    """Lightning strategies that read checkpoints with their own loader, bypassing the
    weights-only CheckpointIO (DeepSpeed's and model-parallel's `weights_only=False`, FSDP's
    plain Unpickler under `fsdp_cpu_offload`), could run pickled code from a run folder's
    checkpoint: refused by name, `fsdp` is Aether's guarded FSDP."""
    from lightning.pytorch.strategies import Strategy, StrategyRegistry

    entry = StrategyRegistry[name] if name in StrategyRegistry else None  # .get() would build one
    if entry and entry["strategy"].load_checkpoint is not Strategy.load_checkpoint:
        raise AetherError(f"trainer.strategy={name}: this Lightning strategy reads checkpoints with its own "
                          "unpickler, which could run code stored in a checkpoint; use trainer.strategy=fsdp "
                          "(Aether's FSDP, checkpoints read weights-only), ddp or auto")


def _safe_fsdp_strategy() -> Any:
    """Lightning's FSDPStrategy, reading checkpoints without running code. Its own
    `load_checkpoint` bypasses the CheckpointIO plugin: a full checkpoint goes through a plain
    (lazy-loading) pickle Unpickler, which runs whatever a poisoned file asks for, and a sharded
    one is a folder of pickles. Here torch's weights-only unpickler reads the file (memory-mapped,
    as lazy as Lightning's) and Lightning is handed that result in place of its own read: one read,
    so the file cannot be swapped between a check and the load."""
    from lightning.pytorch.strategies import FSDPStrategy
    from lightning.pytorch.strategies import fsdp as lightning_fsdp

    from aether.training.checkpoint_io import load_checkpoint_safely

    class SafeFSDPStrategy(FSDPStrategy):
        def load_checkpoint(self, checkpoint_path: Any, weights_only: Optional[bool] = None) -> Dict[str, Any]:
            path = self.broadcast(checkpoint_path)  # every rank loads the path rank 0 chose (Lightning's rule)
            checkpoint = load_checkpoint_safely(path, mmap=True)  # also refuses a folder: Aether writes full ones
            plain_loader = lightning_fsdp._lazy_load
            lightning_fsdp._lazy_load = lambda _path: checkpoint
            try:
                return super().load_checkpoint(path, weights_only=True)
            finally:
                lightning_fsdp._lazy_load = plain_loader

    return SafeFSDPStrategy


def _cpu_fsdp_strategy() -> Any:
    """FSDP over gloo on CPU processes, so the FSDP path runs (and is tested) without a GPU.
    Lightning refuses `fsdp` with accelerator=cpu (by exact class, hence a subclass), and torch's
    FSDP needs the CPU device stated (`device_id=None` makes it look for an accelerator and fail):
    this is Lightning's own wrapping call with `device_id` set. Its two post-wrap steps (moving
    torchmetrics to the device, activation checkpointing) do nothing on CPU with Aether's options."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    class CPUFSDPStrategy(_safe_fsdp_strategy()):  # type: ignore[misc]
        def _setup_model(self, model: Any) -> Any:
            if self.root_device.type != "cpu" or any(isinstance(m, FullyShardedDataParallel) for m in model.modules()):
                return super()._setup_model(model)
            return FullyShardedDataParallel(module=model, cpu_offload=self.cpu_offload,
                                            mixed_precision=self.mixed_precision_config,
                                            sharding_strategy=self.sharding_strategy, device_id=self.root_device,
                                            **self.kwargs)

    return CPUFSDPStrategy


def unshard(trainer: Any, module: Any, checkpoint: Optional[str]) -> None:
    """FSDP only (a no-op otherwise): make `module` a plain LightningModule again holding the full
    weights of `checkpoint` (a full state dict: FSDPStrategy(state_dict_type="full") writes one).

    Why: FSDP wraps each block in place and, after fit, every parameter the module holds is a
    view into this rank's flat shard (empty on most ranks). Lightning does not re-wrap a module
    that already contains FSDP units when testing, so `trainer.test` would load a full checkpoint
    into sharded shapes (a size-mismatch error), and exporting the module would write shards.
    Removing the FSDP wrappers and assigning the checkpoint's tensors as the parameters gives the
    unwrapped model back without keeping a second copy of it through training; `trainer.test`
    then wraps it afresh, and rank 0 does this once more before exporting `model/`."""
    import torch
    from torch.distributed.fsdp import FullyShardedDataParallel

    from aether.training.checkpoint_io import load_checkpoint_safely

    if "FSDP" not in type(trainer.strategy).__name__:
        return
    if not checkpoint or not Path(checkpoint).is_file():
        raise AetherError(f"FSDP: no full checkpoint to restore the unsharded model from ({checkpoint!r})")

    def strip(parent: Any) -> None:
        for name, child in list(parent.named_children()):
            while isinstance(child, FullyShardedDataParallel):
                child = child.module
                setattr(parent, name, child)
            strip(child)

    strip(module)
    # weights only, like every checkpoint read (aether.training.checkpoint_io): the file sits in
    # the run folder, where anyone who can write there could have replaced it
    state = load_checkpoint_safely(checkpoint)["state_dict"]
    # new Parameter objects, not copies into the old ones: those have the shard's shape and carry
    # FSDP's "already flattened" marks, which would stop the next wrap from sharding them
    for name, old in list(module.named_parameters()):
        if name not in state:
            raise AetherError(f"FSDP: {checkpoint} lacks the parameter {name}")
        owner, _, leaf = name.rpartition(".")
        setattr(module.get_submodule(owner), leaf, torch.nn.Parameter(state[name], requires_grad=old.requires_grad))
    module.load_state_dict(state, strict=True)  # buffers, and every key accounted for


_BLOCK_NAMES = ("Block", "SwinTransformerBlock", "ConvNeXtBlock", "Bottleneck", "BasicBlock",
                "ResidualBlock", "InvertedResidual", "DepthwiseSeparableConv", "EfficientFormerBlock")


def block_classes(model: Any) -> set:
    """timm block classes present in the model (by class name: timm defines one per family)."""
    return {type(m) for m in model.modules() if type(m).__name__ in _BLOCK_NAMES}


def log_world(trainer: Any) -> None:
    if getattr(trainer, "world_size", 1) > 1 and not is_secondary_rank():
        log.info("distributed: %d processes (%s, %d node(s)); batch size %d x data.batch_size", trainer.world_size,
                 type(trainer.strategy).__name__, trainer.num_nodes, trainer.world_size)


def rewrap_ddp(trainer: Any) -> bool:
    """Build a fresh DistributedDataParallel wrapper around the LightningModule, so parameters
    that became trainable after the wrapper was built (a gradual unfreeze) have their gradients
    all-reduced too. Returns whether it re-wrapped (only under DDP with several processes).

    Why: DDP registers only the parameters that require grad when it is constructed; a
    parameter unfrozen later gets a local gradient that no rank ever averages, so every rank
    steps it differently and the replicas silently drift apart. Lightning's DDPStrategy
    builds the wrapper in `configure_ddp()` as `_setup_model(module)` then
    `_register_ddp_hooks()` and keeps it in `strategy.model`; doing the same again is the
    whole fix. Constructing DDP is a collective (it checks shapes and broadcasts rank 0's
    parameters and buffers), which is safe here because every rank runs the same schedule and
    changes its trainable set at the same epoch start. The old wrapper's gradient hooks stay
    inert (its reducer no longer expects a backward pass) until it is garbage-collected.
    """
    from lightning.pytorch.strategies import DDPStrategy
    from torch.nn.parallel import DistributedDataParallel

    strategy = trainer.strategy
    if trainer.world_size <= 1 or not isinstance(strategy, DDPStrategy):
        return False
    if not isinstance(strategy.model, DistributedDataParallel):
        return False  # not fitting (evaluation is never wrapped), or already torn down
    strategy.model = strategy._setup_model(strategy.model.module)
    strategy._register_ddp_hooks()
    return True


def gather_rows(rows: Any) -> Any:
    """`rows` (a 2-D CPU tensor, each rank's own) from every rank, concatenated in rank order: the
    whole split's predictions for metrics that are not torchmetrics states (tuned thresholds,
    per-class results). Ranks may hold different row counts (the distributed eval sampler does
    not pad), so each pads to the longest before the collective and the padding is cut after.
    Every rank must call it; one process returns `rows` as they are."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return rows
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    n = torch.tensor([rows.shape[0]], device=device)
    counts = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, n)
    longest = int(max(c.item() for c in counts))
    padded = torch.zeros((longest, rows.shape[1]), dtype=rows.dtype, device=device)
    padded[: rows.shape[0]] = rows.to(device)
    parts = [torch.zeros_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(c.item())] for p, c in zip(parts, counts)]).cpu()


def params_in_sync(trainer: Any, module: Any) -> Optional[bool]:
    """After fit, whether every rank holds the same parameters: each rank's float64 (sum,
    sum of squares) over all parameters, gathered and compared. None for one process, and for
    FSDP (each rank holds its own shard by design: there are no replicas to compare). Every
    rank must call this (it is a collective). A mismatch is logged loudly with its size."""
    import torch
    import torch.distributed as dist

    if getattr(trainer, "world_size", 1) <= 1 or "FSDP" in type(trainer.strategy).__name__:
        return None
    with torch.no_grad():
        total = torch.zeros(2, dtype=torch.float64, device=trainer.strategy.root_device)
        for p in module.parameters():
            x = p.detach().to(device=total.device, dtype=torch.float64)
            total += torch.stack([x.sum(), (x * x).sum()])
    parts = [torch.zeros_like(total) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, total)  # plain collective (Lightning's all_gather goes through a deprecated autograd one)
    gathered = torch.stack(parts).cpu()
    diff = float((gathered - gathered[0]).abs().max())
    # replicas that apply the same all-reduced gradients are bitwise equal; the tolerance only
    # forgives summation-order noise, far below what one unsynced step produces
    ok = diff <= 1e-9 * max(1.0, float(gathered[0].abs().max()))
    if not ok and trainer.is_global_zero:
        log.warning("DISTRIBUTED RANKS OUT OF SYNC: parameter checksums differ between ranks by up to %.3g "
                    "(per rank [sum, sum of squares]: %s); the replicas trained different models", diff,
                    [[round(v, 6) for v in row] for row in gathered.tolist()])
    return ok


def section(trainer: Any, in_sync: Optional[bool]) -> Dict[str, Any]:
    """metrics.json's `distributed` section: the same keys for one process or many."""
    return {"world_size": int(getattr(trainer, "world_size", 1)), "strategy": type(trainer.strategy).__name__,
            "params_in_sync": in_sync}
