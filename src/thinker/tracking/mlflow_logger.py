"""A Lightning logger that writes metrics to MLflow in batches, off the training thread.

Per-step metrics are buffered and sent with MlflowClient.log_batch(synchronous=False) every
`flush_every` steps (or seconds), so logging costs a training step almost nothing; the time spent inside
log_metrics is measured and reported as `logging_overhead_fraction`. finalize() flushes, waits for the
writes; the run itself stays open for the pipeline's later stages and is closed by MlflowSession.

A resumed run logs into the interrupted run's MLflow run, and trains again the steps after its checkpoint
that the interrupted run had already logged: `logged_through` (logged_steps()) holds, per metric, the last
step the run has, and points up to it are dropped, so every step keeps exactly one point.
"""

from __future__ import annotations

import time
from typing import Any

from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities import rank_zero_only


def logged_steps(client, run_id: str) -> dict[str, int]:
    """The last step each metric of the run already has a point at."""
    metrics = client.get_run(run_id).data.metrics
    return {key: max(m.step for m in client.get_metric_history(run_id, key)) for key in metrics}


def session_logger(session: Any, resuming: bool) -> BatchedMlflowLogger | bool:
    """The training loop's logger for an MLflow session (False without one: Lightning's "no logger"); when
    `resuming`, it leaves out what the interrupted run already logged."""
    if session is None:
        return False
    logged = logged_steps(session.client, session.run_id) if resuming else {}
    return BatchedMlflowLogger(session.client, session.run_id, logged_through=logged)


class BatchedMlflowLogger(Logger):
    def __init__(self, client, run_id: str, flush_every: int = 20, flush_seconds: float = 5.0,
                 logged_through: dict[str, int] | None = None):
        super().__init__()
        self.logged_through = dict(logged_through or {})
        self._client = client
        self._run_id = run_id
        self._flush_every = flush_every
        self._flush_seconds = flush_seconds
        self._buffer: list[Any] = []
        self._pending: list[Any] = []
        self._last_flush = time.monotonic()
        self.seconds_in_logging = 0.0

    @property
    def name(self) -> str:
        return "mlflow"

    @property
    def version(self) -> str:
        return self._run_id

    @property
    def run_id(self) -> str:
        return self._run_id

    @property
    def experiment(self):
        return self._client

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        # The pipeline logs the flattened resolved config itself; Lightning's own hparams add nothing.
        return

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        start = time.perf_counter()
        now_ms = int(time.time() * 1000)
        step = int(step or 0)
        for key, value in metrics.items():
            if key == "epoch" or step <= self.logged_through.get(key, -1):
                continue
            self._buffer.append(Metric(key=key, value=float(value), timestamp=now_ms, step=step))
        if len(self._buffer) >= self._flush_every or time.monotonic() - self._last_flush > self._flush_seconds:
            self.flush(wait=False)
        self.seconds_in_logging += time.perf_counter() - start

    def flush(self, wait: bool) -> None:
        while self._buffer:
            chunk, self._buffer = self._buffer[:1000], self._buffer[1000:]  # MLflow: 1000 metrics a batch
            self._pending.append(self._client.log_batch(self._run_id, metrics=chunk, synchronous=False))
        self._last_flush = time.monotonic()
        if wait:
            for op in self._pending:
                if op is not None:
                    op.wait()
            self._pending.clear()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.flush(wait=True)
