"""`trainer.fit_epochs_to_time`: an epoch count that follows the time a run has left.

`+recipe=auto` fits its final training's epochs to the budget left at the epoch time its search
measured. That time drifts: on 2 shared cores a search that met a slower minute measured 15 s
epochs, the final training's ran in 8-12 s, and 84 s of a 5-minute budget went unused; a machine
that gets busier cuts the schedule with the Timer in its high-LR phase instead. So at every epoch
end this callback counts the epochs the Timer's remaining time holds at the epochs measured so far
and makes that the run's `max_epochs`, the LR schedule stretched or shrunk with it
(StrategyModule.stretch_schedule, the steps taken kept). It grows only while the schedule is in
its first half, where a longer horizon only slows the warm-up or the start of the decay; later it
only shrinks (a shorter horizon brings the decay forward, which is what a run short of time needs).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, List, Optional

from lightning.pytorch.callbacks import Callback, Timer

log = logging.getLogger("aether")

GROW_UNTIL = 0.5  # of the schedule's epochs: later, a longer horizon would raise the decaying LR again
SLACK = 1.05  # on the measured epoch time: epochs of one run vary by a few percent
# growing by less than this share of the epochs is noise (epoch times vary by a few percent): a
# schedule re-fitted for one epoch more at every epoch end only jitters its LR
GROW_STEP = 0.05
# ... and by at least this many epochs: with a step of one, a count that had just shrunk by one grew
# back at the next epoch end (digits from transferred weights: 29 -> 30 -> 29 six times in one run)
GROW_MIN = 2


class EpochsFitToTime(Callback):
    """Re-fit `max_epochs` to the Timer's remaining time at each epoch end, up to `cap` epochs.
    `on_change(epochs)` records a new count (the run's config.yaml, so a resume trains as many)."""

    def __init__(self, cap: int, on_change: Optional[Callable[[int], None]] = None) -> None:
        self.cap = int(cap)
        self.on_change = on_change
        self._times: List[float] = []
        self._start: Optional[float] = None
        self.changes: List[str] = []

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._start = time.monotonic()

    def epoch_seconds(self) -> float:
        """The median epoch, the first left out once there are others (it starts the loader workers
        and, in a first run, builds the decoded-image cache)."""
        times = sorted(self._times[1:] or self._times)
        return times[len(times) // 2]

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        # from one epoch end to the next: validation (Lightning runs it before this hook),
        # checkpoints and the loaders' restarts are all part of what an epoch costs
        if self._start is None:
            return
        now = time.monotonic()
        self._times.append(now - self._start)
        self._start = now
        timer = next((cb for cb in trainer.callbacks if isinstance(cb, Timer)), None)
        left = timer.time_remaining("train") if timer is not None else None
        if left is None:
            return
        done, current = trainer.current_epoch + 1, int(trainer.max_epochs or 0)
        fits = done + max(0, int(left // (SLACK * self.epoch_seconds())))
        new = current
        if fits < current:
            new = max(done, fits)
        elif fits >= current + max(GROW_MIN, round(GROW_STEP * current)) and current < self.cap \
                and done <= GROW_UNTIL * current:
            new = min(self.cap, fits)
        new = int(trainer.strategy.broadcast(new, 0))  # one count on every rank (DDP), rank 0's clock
        if new == current:
            return
        if new == done:  # no further epoch fits: the run ends here, as the Timer would one epoch later
            trainer.should_stop = True
        if new > done and not pl_module.stretch_schedule(new):
            if new > current:  # a schedule that cannot stretch keeps its epochs
                return
        trainer.fit_loop.max_epochs = new
        line = (f"epochs {current} -> {new}: {self.epoch_seconds():.1f} s an epoch, {left:.0f} s left "
                f"after epoch {done} (trainer.fit_epochs_to_time={self.cap})")
        self.changes.append(line)
        if trainer.is_global_zero:
            log.info("%s", line)
            if self.on_change is not None:
                self.on_change(new)
