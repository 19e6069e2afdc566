"""The backend=tinker training loop: the local backend's steps, sent to a Tinker service.

Steps are the same as backend=local with packing off (a Tinker Datum is one sequence): the same rows in the
same seeded order, `trainer.grad_accum` micro-batches of `trainer.batch_size` rows per optimizer step, the
same token-normalised loss, the learning-rate schedule applied per step through AdamParams.

Throughput: forward_backward and optim_step of the next `backend.options.in_flight` steps are submitted
before the oldest result is awaited (as tinker-cookbook does), so the service never waits on this process.
Submission stops at each checkpoint boundary: the held-out loss and the saved state describe exactly the
weights after that step.

Nothing is logged twice or lost: per-step metrics are held back until the state after them is saved (and
recorded in checkpoints.jsonl), then sent to MLflow. When the service is lost mid-run (a connection error,
a 5xx the SDK's own retries did not get past, a restarted server that no longer knows the model, a service
that stops answering while a result is awaited: thinker.backends.tinker.watch), the loop waits for it until
`recover_s` after its last answer, re-creates the training client from the last saved state and replays
from there; resume=true does the same from a new process. A service that does not come back ends the run
with one error line and its resume command (exit 4), the ledger and the saved states as they were.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from thinker.backends import TrainingReport, WeightsRef
from thinker.backends.tinker.datums import LossSums, Targets, output_logprobs, step_targets, to_datums
from thinker.backends.tinker.ledger import CheckpointLedger, SavedState
from thinker.backends.tinker.preflight import tinker_base_name
from thinker.backends.tinker.watch import ServiceLost, ServiceWatch
from thinker.errors import ExitCode, ThinkerError
from thinker.tracking.run_record import RECORD_NAME

log = logging.getLogger("thinker")

SAMPLER_NAME = "final"
TOKENIZER = "tokenizer"  # <run folder>/tokenizer: the tokenizer the service trained with


@dataclass
class Submitted:
    index: int  # 0-based optimizer step
    targets: list[Targets]
    lr: float
    forward_backward: Any
    optim: Any


@dataclass
class Progress:
    step: int = 0
    trained_tokens: int = 0
    train_loss: float | None = None
    val_loss: float | None = None
    tokens_per_sec: float = 0.0
    held_back: list[tuple[int, dict[str, float]]] = field(default_factory=list)  # metrics not yet saved

    def restart_at(self, saved: SavedState | None) -> None:
        self.step = saved.step if saved else 0
        self.trained_tokens = saved.trained_tokens if saved else 0
        self.held_back = [(s, m) for s, m in self.held_back if s <= self.step]


class TinkerTrainer:
    def __init__(self, cfg: DictConfig, run_dir: Path, tracker: Any, options: dict[str, Any], url: str):
        import tinker

        self.cfg, self.run_dir, self.tracker, self.url = cfg, run_dir, tracker, url
        self.options = options
        self.in_flight = int(options.get("in_flight", 2))
        self.base = tinker_base_name(cfg)
        self.service = tinker.ServiceClient(base_url=url)  # the key comes from TINKER_API_KEY
        self.watch = ServiceWatch(url)  # every wait on the SDK goes through it: the SDK alone waits forever
        self.ledger = CheckpointLedger(run_dir)
        self.progress = Progress()
        self.client: Any = None
        self.recoveries = 0

    # ------------------------------------------------------------ clients

    def open_client(self, saved: SavedState | None) -> Any:
        """A LoRA training client: from the saved state (weights and Adam moments), or fresh and seeded."""
        if saved is not None:
            return self.watch.result(self.service.create_training_client_from_state_with_optimizer(saved.path))
        return self.watch.result(self.service.create_lora_training_client(
            base_model=self.base, rank=int(self.cfg.method.rank), seed=int(self.cfg.seed),
            train_mlp=True, train_attn=True, train_unembed=bool(self.options.get("train_unembed", False)),
            user_metadata={"thinker_run": self.run_dir.name, "thinker_model": str(self.cfg.model.name)},
        ))

    # ------------------------------------------------------------ the run

    def train(self) -> TrainingReport:
        try:
            return self._train()
        except ServiceLost as lost:  # outside the steps (tokenizer, final sampler weights): nothing to replay
            raise self.service_gone(lost.silent_since) from None

    def _train(self) -> TrainingReport:
        from thinker.backends.local.backend import checkpoint_interval, total_optimizer_steps
        from thinker.data.batches import ResumableLoader

        cfg = self.cfg
        saved = self.start_point()
        self.progress.restart_at(saved)
        try:
            self.client = self.open_client(saved)
        except Exception as error:  # noqa: BLE001 - sorted by recoverable()
            if not recoverable(error):
                raise
            self.recover(error)
        tokenizer = self.watch.call(self.client.get_tokenizer)
        # kept with the run: a SamplingClient can only find a tokenizer by hub id, which a local server's
        # base models (tiny-qwen, registry models) are not
        tokenizer.save_pretrained(self.run_dir / TOKENIZER)
        self.tokenizer = tokenizer
        train_rows, counts = self.prepare_data(tokenizer)
        loader = ResumableLoader(train_rows, int(cfg.trainer.batch_size), 0, False, int(cfg.seed),
                                 bool(cfg.data.shuffle), micro_batches_per_step=int(cfg.trainer.grad_accum))
        self.steps = total_optimizer_steps(loader.micro_batches, cfg)
        self.every = checkpoint_interval(self.steps, cfg)
        self.steps_per_epoch = len(loader)
        self.loader = loader
        if self.tracker is not None:
            self.tracker.log_metrics(counts)
            self.tracker.set_tags({"tinker_base_model": self.base, "tinker_service": self.url,
                                   "tinker_checkpoints": str(self.ledger.file)})
        log.info("training on Tinker (%s, base %s, LoRA rank %d): %d optimizer steps of %d x %d %s, "
                 "held-out eval + saved state every %d, %d in flight", self.url, self.base, int(cfg.method.rank),
                 self.steps, int(cfg.trainer.grad_accum), int(cfg.trainer.batch_size), self.unit, self.every,
                 self.in_flight)
        started = time.perf_counter()
        first_step = self.progress.step
        while True:
            try:
                self.run_steps()
                break
            except KeyboardInterrupt:
                from thinker.tracking.resume_command import resume_command

                last = self.ledger.last_state()
                raise ThinkerError(
                    f"training stopped by SIGINT at step {self.progress.step}; the last saved state is from step "
                    f"{last.step if last else 0}", str(self.ledger.file),
                    f"continue with: {resume_command(self.run_dir)}", stage="train",
                    code=ExitCode.INTERRUPTED) from None
            except Exception as error:  # noqa: BLE001 - sorted by recoverable() below
                if not recoverable(error):
                    raise
                self.recover(error)
        seconds = time.perf_counter() - started
        sampler_path = self.watch.result(self.client.save_weights_for_sampler(name=SAMPLER_NAME)).path
        self.ledger.append(SavedState(self.progress.step, sampler_path, self.progress.trained_tokens, kind="sampler"))
        log.info("saved the sampler weights as %s", sampler_path)
        return self.report(sampler_path, seconds, self.progress.step - first_step)

    unit = "sequences"  # what one trainer.batch_size counts (the log line)

    def prepare_data(self, tokenizer: Any) -> tuple[list[Any], dict[str, float]]:
        """(the training items the loader orders: rows here, pairs for objective=dpo, the counts to log);
        keeps the held-out items for checkpoint()."""
        from thinker.data.prepare import prepare_training_data

        data = prepare_training_data(self.cfg, self.run_dir, tokenizer, packed=False)
        self.val_targets = step_targets(data.val_rows)
        return data.train_rows, {"train_examples": data.read_train_examples, "train_tokens": data.stats.tokens}

    def start_point(self) -> SavedState | None:
        if not self.cfg.resume:
            self.ledger.reset()
            return None
        saved = self.ledger.last_state()
        if saved is None:
            if not (self.run_dir / RECORD_NAME).exists():
                raise ThinkerError(f"resume=true but {self.ledger.file} records no saved Tinker state", "resume",
                                   "pass hydra.run.dir=<the interrupted run's folder> with resume=true, or drop resume",
                                   stage="train")
            log.warning("resume=true: %s has no saved state yet; training restarts from step 0 in the same run",
                        self.run_dir)
            return None
        log.info("resuming from step %d (%s)", saved.step, saved.path)
        return saved

    def run_steps(self) -> None:
        pending: deque[Submitted] = deque()
        next_index = self.progress.step
        self.clock = (time.perf_counter(), self.progress.trained_tokens)  # tokens/s since this attempt started
        with step_progress(self.steps, self.progress.step, float(self.cfg.trainer.progress_every_s)) as advance:
            while self.progress.step < self.steps:
                boundary = min(self.steps, (self.progress.step // self.every + 1) * self.every)
                while next_index < boundary and len(pending) < self.in_flight:
                    pending.append(self.submit(next_index))
                    next_index += 1
                self.finish(pending.popleft())
                advance(self.progress)
                if self.progress.step == boundary:
                    self.checkpoint()

    def submit(self, index: int) -> Submitted:
        from tinker import types

        from thinker.backends.schedules import scheduled_multiplier

        epoch, item = divmod(index, self.steps_per_epoch)
        rows = [row for micro in self.loader.rows_of(item, epoch) for row in micro]
        targets = step_targets(rows)
        opt = self.cfg.optimizer
        lr = float(opt.lr) * scheduled_multiplier(index, self.steps, opt.scheduler)
        adam = types.AdamParams(learning_rate=lr, beta1=float(opt.betas[0]), beta2=float(opt.betas[1]),
                                eps=float(opt.eps), weight_decay=float(opt.weight_decay),
                                grad_clip_norm=float(opt.max_grad_norm))
        fb = self.client.forward_backward(to_datums(targets, normalise=True), "cross_entropy")
        return Submitted(index, targets, lr, fb, self.client.optim_step(adam))

    def finish(self, job: Submitted) -> None:
        output = self.watch.result(job.forward_backward)
        self.watch.result(job.optim)
        sums = LossSums()
        sums.add(job.targets, output_logprobs(output))
        p = self.progress
        p.step, p.trained_tokens, p.train_loss = job.index + 1, p.trained_tokens + sums.tokens, sums.mean
        p.tokens_per_sec = (p.trained_tokens - self.clock[1]) / max(time.perf_counter() - self.clock[0], 1e-9)
        p.held_back.append((p.step, {"train_loss": sums.mean, "train_loss_weighted": sums.weighted_mean,
                                     "lr": job.lr, "trained_tokens": float(p.trained_tokens),
                                     "tokens_per_sec": p.tokens_per_sec}))

    def checkpoint(self) -> None:
        p = self.progress
        held_out = self.held_out_metrics()
        if held_out:
            p.val_loss = held_out["val_loss"]
            p.held_back.append((p.step, held_out))
            log.info("step %d/%d: held-out loss %.4f", p.step, self.steps, p.val_loss)
        path = self.watch.result(self.client.save_state(name=f"step{p.step:06d}")).path
        self.ledger.append(SavedState(p.step, path, p.trained_tokens))
        if self.tracker is not None:
            for step, metrics in p.held_back:
                self.tracker.log_metrics(metrics, step=step)
        p.held_back = []

    def held_out_metrics(self) -> dict[str, float]:
        """What each checkpoint logs about the held-out data ({} without any): val_loss at least."""
        return {"val_loss": self.held_out_loss()} if self.val_targets else {}

    def held_out_loss(self) -> float:
        batch = int(self.cfg.trainer.batch_size)
        chunks = [self.val_targets[i:i + batch] for i in range(0, len(self.val_targets), batch)]
        futures = [self.client.forward(to_datums(c, normalise=False), "cross_entropy") for c in chunks]
        sums = LossSums()
        for chunk, future in zip(chunks, futures, strict=True):
            sums.add(chunk, output_logprobs(self.watch.result(future)))
        return sums.mean

    # ------------------------------------------------------------ faults

    def recover(self, error: BaseException) -> None:
        """Wait for the service, then a new training client from the last saved state (again if the service
        is lost while it is made)."""
        from thinker.tracking.resume_command import resume_command

        limit = int(self.options.get("max_recoveries", 3))
        saved = self.ledger.last_state()
        while True:
            self.recoveries += 1
            if self.recoveries > limit:
                raise ThinkerError(
                    f"lost the Tinker service {self.recoveries} times ({describe(error)})", self.url,
                    f"check the service, then continue from step {saved.step if saved else 0}, the last saved "
                    f"state, with: {resume_command(self.run_dir)}", stage="train") from error
            log.warning("lost the Tinker service at step %d (%s); continuing from step %d, the last saved state",
                        self.progress.step, describe(error), saved.step if saved else 0)
            silent_since = error.silent_since if isinstance(error, ServiceLost) else time.monotonic()
            if not wait_for_service(self.url, silent_since + float(self.options.get("recover_s", 120))):
                raise self.service_gone(silent_since) from None
            self.progress.restart_at(saved)
            try:
                self.client = self.open_client(saved)
                return
            except Exception as again:  # noqa: BLE001 - sorted by recoverable()
                if not recoverable(again):
                    raise
                error = again

    def service_gone(self, silent_since: float) -> ThinkerError:
        """The run ends here: the service has not answered for recover_s. Nothing is lost: checkpoints.jsonl
        names the states saved so far, and resume=true continues from the last one."""
        from thinker.tracking.resume_command import resume_command

        saved = self.ledger.last_state()
        silent = time.monotonic() - silent_since
        return ThinkerError(
            f"the Tinker service stopped answering at step {self.progress.step} ({silent:.0f} s without an answer; "
            f"backend.options.recover_s={self.options.get('recover_s', 120)})", self.url,
            f"start the service, then continue from step {saved.step if saved else 0}, the last saved state, "
            f"with: {resume_command(self.run_dir)}", stage="train")

    def report(self, sampler_path: str, seconds: float, steps_run: int) -> TrainingReport:
        p = self.progress
        metrics: dict[str, float] = {}
        if p.train_loss is not None:
            metrics["train_loss"] = float(p.train_loss)
        if p.val_loss is not None:
            metrics["val_loss"] = float(p.val_loss)
        metrics.update(trained_tokens=float(p.trained_tokens), optimizer_steps=float(p.step), train_seconds=seconds,
                       steps_per_sec=steps_run / max(seconds, 1e-9))
        last = self.ledger.last_state()
        return TrainingReport(
            backend="tinker", weights=WeightsRef(sampler_path), metrics=metrics,
            extra={"tinker_base_model": self.base, "tinker_service": self.url,
                   "tinker_state": last.path if last else None, "checkpoints": str(self.ledger.file),
                   "tokenizer": str(self.run_dir / TOKENIZER), "recoveries": self.recoveries},
            objects={"tokenizer": self.tokenizer})


# ---------------------------------------------------------------- helpers


def recoverable(error: BaseException) -> bool:
    """A lost or restarted service (worth waiting for), as opposed to a request the service refuses.

    The SDK wraps what went wrong while it polled a future (ValueError / RetryableException raised from the
    HTTP error), so the whole cause chain is read.
    """
    import tinker
    from tinker.lib.retryable_exception import RetryableException

    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, (ServiceLost, tinker.APIConnectionError, RetryableException)):  # includes timeouts
            return True
        # 5xx after the SDK's own retries; 404: a restarted server no longer knows this model or future
        if isinstance(seen, tinker.APIStatusError) and (seen.status_code >= 500 or seen.status_code in (404, 408)):
            return True
        seen = seen.__cause__
    return False


def describe(error: BaseException) -> str:
    """The error's kind and HTTP status, from the innermost cause that has one (never a request body)."""
    seen: BaseException | None = error
    while seen is not None:
        status = getattr(seen, "status_code", None)
        if status:
            return f"{type(seen).__name__} {status}"
        seen = seen.__cause__
    return type(error).__name__


def wait_for_service(url: str, deadline: float) -> bool:
    """True once the service's healthz answers 200; False if it has not by `deadline` (time.monotonic())."""
    import httpx

    while True:
        try:
            if httpx.get(f"{url}/api/v1/healthz", timeout=5.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(1.0)


class step_progress:  # noqa: N801 - used as a context manager, like open()
    """One console line: optimizer steps, ETA, loss and tokens/s (the local backend's bar, without Lightning);
    outside a terminal, where the bar shows only its last frame, a progress line every `every_s` seconds too."""

    def __init__(self, total: int, done: int, every_s: float = 0.0):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from thinker.backends.progress_lines import ProgressLines

        self.bar = Progress(TextColumn("tinker"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                            TextColumn("{task.fields[status]}"), transient=False)
        self.task = self.bar.add_task("train", total=total, completed=done, status="")
        self.lines = ProgressLines(total, every_s, done=done)

    def __enter__(self) -> Callable[[Progress], None]:
        self.bar.start()
        return self.advance

    def advance(self, p: Progress) -> None:
        status = f"loss {p.train_loss:.3f}  {p.tokens_per_sec:,.0f} tok/s" if p.train_loss is not None else ""
        self.bar.update(self.task, completed=p.step, status=status)
        self.lines.update(p.step, p.train_loss, p.tokens_per_sec)

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()
