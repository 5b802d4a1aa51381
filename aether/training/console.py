"""Route Lightning's messages through the run's own log handlers, once, without the noise."""

from __future__ import annotations

import logging

NOISE = ("💡 Tip", "was configured so 100% of the batches", "to estimate number of stepping batches",
         "TPU available", "HPU available", "LOCAL_RANK:", "Restoring states from the checkpoint path",
         "`Trainer.fit` stopped: `max_epochs",
         # data.batch_size / optimizer.lr = auto (aether.training.tuning): the searches' own
         # checkpoint, saved and restored around them, and their step limit
         "`weights_only` was not set", ".lr_find_", ".scale_batch_size_", "`Trainer.fit` stopped: `max_steps=",
         # bitsandbytes (the qlora extra), imported by PEFT in every LoRA run, hints at an optional
         # CPU kernel package; Aether never runs 4-bit layers on the CPU
         "Failed to load CPU gemm_4bit_forward")


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not any(n in msg for n in NOISE)


def tame_lightning_logging() -> None:
    """Lightning adds its own console handlers at import; with Hydra's handlers on the root logger
    every message would print twice. Drop Lightning's handlers, let records propagate, filter hints."""
    import lightning  # noqa: F401  (its import installs the handlers we remove)

    root = logging.getLogger()
    if not root.handlers:
        return  # no handlers of ours (library use): leave Lightning's console output alone
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for h in list(logger.handlers):
            logger.removeHandler(h)
        logger.propagate = True
    for h in root.handlers:  # filters on handlers also see records propagated from child loggers
        if not any(isinstance(f, _DropNoise) for f in h.filters):
            h.addFilter(_DropNoise())
