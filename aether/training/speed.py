"""`trainer.compile=true`: torch.compile the model's forward, never at the cost of the run.

torch.compile compiles lazily, at the first call, so failures (no C compiler for inductor, an
unsupported operator, an old GPU) surface inside the first training step. The forward is
wrapped so that such a failure logs one message and the run continues in eager mode. Only the
`forward` attribute of the model instance changes: parameter names, checkpoints and the exported
model are exactly those of an uncompiled run, and `restore` removes the wrapper before export.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

log = logging.getLogger("aether")


def maybe_compile(model: Any, enabled: bool, backend: str = "inductor") -> bool:
    """Wrap model.forward with a compiled version; True when compilation was set up."""
    if not enabled:
        return False
    import torch

    eager: Callable = model.forward
    try:
        compiled = torch.compile(eager, backend=backend)
    except Exception as exc:  # e.g. an unknown backend, a platform torch.compile does not support
        log.warning("trainer.compile: torch.compile is not available here (%s); training without it",
                    _first_line(exc))
        return False
    state = {"compiled": True}

    def forward(*args: Any, **kwargs: Any) -> Any:
        if state["compiled"]:
            try:
                return compiled(*args, **kwargs)
            except Exception as exc:
                state["compiled"] = False
                log.warning("trainer.compile: compiling the model failed (%s); continuing in eager mode",
                            _first_line(exc))
        return eager(*args, **kwargs)

    model.forward = forward
    log.info("trainer.compile: model forward compiled with torch.compile (backend %s)", backend)
    return True


def restore(model: Any) -> None:
    """Remove the compiled wrapper (the class's own forward applies again)."""
    model.__dict__.pop("forward", None)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def apply_speedups(rc: Any, job: Any) -> None:
    """The run's optional speed-ups: channels_last where it helps (CUDA convnets fed by the
    uint8 fast path) and trainer.compile."""
    import torch

    from aether.data.prefetch import wants_channels_last

    fast = getattr(job.datamodule, "fast", None)
    cuda = torch.cuda.is_available() and rc.trainer.accelerator in ("auto", "gpu", "cuda")
    if fast is not None and wants_channels_last(job.module.model, cuda):
        job.module.model.to(memory_format=torch.channels_last)
        fast.device.channels_last = True
        log.info("channels_last memory format (CUDA convolutions)")
    maybe_compile(job.module.model, rc.trainer.compile)
