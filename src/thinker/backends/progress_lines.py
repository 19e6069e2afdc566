"""Training progress as log lines when nobody watches a terminal (a log file, CI).

A Rich progress bar redraws one line in a terminal; written to a file or a pipe it shows only its final frame,
so a piped run said nothing between held-out evaluations for minutes. Outside a terminal every backend's loop
(Lightning's through thinker.backends.local.progress, Tinker's own) logs one line every
`trainer.progress_every_s` seconds instead: step, loss, tokens/s, time so far and an estimate of the rest.

No torch or Lightning here: the Tinker loop uses it as is.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from datetime import timedelta

log = logging.getLogger("thinker")


def clock_text(seconds: float) -> str:
    """0:01:05, as the progress bar writes durations."""
    return str(timedelta(seconds=int(max(seconds, 0))))


def progress_line(step: int, total: int, loss: float | None, tokens_per_sec: float | None, elapsed: float,
                  steps_timed: int) -> str:
    """`step 6/24: loss 7.9123, 310 tok/s, 0:00:14 so far, about 0:00:42 left`. The estimate extrapolates the
    `steps_timed` steps that took `elapsed` seconds (held-out evaluations included); none before a step is timed
    and none once the last step is done."""
    parts = [f"loss {loss:.4f}" if loss is not None else "no loss yet"]
    if tokens_per_sec:
        parts.append(f"{tokens_per_sec:,.0f} tok/s")
    parts.append(f"{clock_text(elapsed)} so far")
    if 0 < steps_timed and step < total:
        parts.append(f"about {clock_text(elapsed / steps_timed * (total - step))} left")
    return f"step {step}/{total}: " + ", ".join(parts)


def attended_terminal() -> bool:
    """True when stdout is a terminal, where the progress bar itself is live."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced or closed stdout
        return False


class ProgressLines:
    """Logs a progress line at most every `every_s` seconds (0 or less: never; in a terminal: never, unless
    `enabled` says otherwise). `done`: the step this run starts from (a resumed run's ETA counts only its own
    steps)."""

    def __init__(self, total: int, every_s: float, done: int = 0, enabled: bool | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.total, self.every_s, self.start_step = int(total), float(every_s), int(done)
        self.enabled = self.every_s > 0 and (not attended_terminal() if enabled is None else enabled)
        self.clock = clock
        self.started = self.last = clock()

    def update(self, step: int, loss: float | None, tokens_per_sec: float | None) -> str | None:
        """The line logged now, or None while the interval has not passed."""
        if not self.enabled:
            return None
        now = self.clock()
        if now - self.last < self.every_s:
            return None
        self.last = now
        line = progress_line(step, self.total, loss, tokens_per_sec, now - self.started, step - self.start_step)
        log.info("%s", line)
        return line
