"""Which checkpoint a resumed local run continues from, and its checkpoint folder tidied for it.

A kill -9 can land between any two writes of a checkpoint save: after `stepNNNNNN.ckpt` and before
`last.ckpt`, inside the write of `last.ckpt` (AtomicCheckpointIO then leaves a `.last.ckpt.*.tmp` behind,
never a torn `last.ckpt`), or after a new periodic checkpoint and before ModelCheckpoint deletes the one it
replaces. So resume reads every checkpoint in the folder and continues from the one with the highest step
recorded inside it (not the newest file: copies and restores change mtimes); one that does not load is
skipped with a warning naming it. Before training continues, rank 0 deletes the half-written temporary
files and the checkpoints that the chosen one's ModelCheckpoint state does not track (beyond
trainer.save_total_limit, or torn): ModelCheckpoint would never delete those itself. A periodic checkpoint
chosen is resumed through last.ckpt (a hard link to it), since Lightning never deletes the file a run resumed
from and that one would stay beyond the limit for good.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from thinker.backends.local.checkpointing import LAST
from thinker.backends.local.lightning_run import CHECKPOINTS
from thinker.backends.local.ranks import is_rank_zero
from thinker.errors import ThinkerError
from thinker.tracking.run_record import RECORD_NAME

log = logging.getLogger("thinker")

# Lightning's version suffix (`step000004-v1.ckpt`): a second save under a name that existed
_VERSIONED = re.compile(r"-v\d+\.ckpt$")


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int
    # file names ModelCheckpoint's state in this checkpoint keeps (its top-k and last.ckpt)
    tracked: frozenset[str] = field(default_factory=frozenset)


def read_checkpoint(path: Path) -> Checkpoint:
    """The step recorded in `path` and the checkpoints its ModelCheckpoint state tracks; raises when the
    file does not load. weights_only=True: our checkpoints hold tensors and plain values only (module.py)."""
    import torch

    # mmap: the tensors are not read, only the archive's index and the pickled structure
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    tracked: set[str] = set()
    for callback in (state.get("callbacks") or {}).values():
        if isinstance(callback, dict) and "best_k_models" in callback:
            tracked.update(Path(p).name for p in callback["best_k_models"])
            if callback.get("last_model_path"):
                tracked.add(Path(callback["last_model_path"]).name)
    return Checkpoint(path, int(state["global_step"]), frozenset(tracked))


def _reason(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return first if len(first) <= 160 else first[:157] + "..."


def loadable_checkpoints(ckpt_dir: Path) -> tuple[list[Checkpoint], dict[Path, str]]:
    """(the checkpoints that load, newest step first and last.ckpt first among equals; those that do not,
    with why)."""
    good: list[Checkpoint] = []
    bad: dict[Path, str] = {}
    for path in sorted(ckpt_dir.glob("*.ckpt")):
        try:
            good.append(read_checkpoint(path))
        except Exception as exc:  # noqa: BLE001 - whatever the damage (torn zip, bad pickle, no step): skip it
            bad[path] = _reason(exc)
    # among equal steps: last.ckpt, then a name without a version suffix
    good.sort(key=lambda c: (c.step, c.path.name == LAST, not _VERSIONED.search(c.path.name)), reverse=True)
    return good, bad


def tidy_checkpoint_dir(ckpt_dir: Path, chosen: Checkpoint | None) -> list[Path]:
    """Delete what a killed save left behind: `.*.tmp` files, and checkpoints `chosen` does not track.
    Returns what was deleted."""
    stale = list(ckpt_dir.glob(".*.tmp"))
    if chosen is not None:
        keep = chosen.tracked | {chosen.path.name}
        stale += [p for p in ckpt_dir.glob("*.ckpt") if p.name not in keep]
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        log.info("resume: removed %s from %s (left by an interrupted save, or beyond trainer.save_total_limit)",
                 ", ".join(sorted(p.name for p in stale)), ckpt_dir)
    return stale


def resume_through_last(chosen: Path) -> Path:
    """last.ckpt holding what `chosen` holds (a hard link, or a copy where links are not possible)."""
    last = chosen.with_name(LAST)
    if chosen == last:
        return last
    tmp = chosen.with_name(f".{LAST}.resume.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(chosen, tmp)
    except OSError:
        shutil.copyfile(chosen, tmp)
    os.replace(tmp, last)  # checkpoint saves replace last.ckpt by rename too, so the link never changes `chosen`
    return last


def resume_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of an interrupted run; None when it stopped before its first one.

    The pipeline has already checked that `run_dir` holds the interrupted run's record (so a run that
    crashed before any checkpoint restarts from scratch into the same MLflow run); without a record either,
    there is nothing to resume.
    """
    ckpt_dir = run_dir / CHECKPOINTS
    good, bad = loadable_checkpoints(ckpt_dir) if ckpt_dir.is_dir() else ([], {})
    chosen = good[0] if good else None
    if bad and chosen is None:
        damaged = "; ".join(f"{p.name}: {why}" for p, why in bad.items())
        raise ThinkerError(
            f"resume=true but no checkpoint in {ckpt_dir} loads ({damaged})",
            f"{ckpt_dir}",
            f"to start over in the same run, delete {ckpt_dir} and run again with resume=true (training restarts "
            "from step 0); or drop resume=true for a new run",
            stage="train",
        )
    rank_zero = is_rank_zero()
    if ckpt_dir.is_dir() and rank_zero:
        tidy_checkpoint_dir(ckpt_dir, chosen)
    if chosen is not None:
        for path, why in bad.items():
            log.warning("resume: %s does not load (%s); continuing from %s (step %d), the newest checkpoint that "
                        "does", path, why, chosen.path.name, chosen.step)
        log.info("resuming from step %d (%s)", chosen.step, chosen.path)
        return resume_through_last(chosen.path) if rank_zero else chosen.path
    if (run_dir / RECORD_NAME).exists():
        log.warning("resume=true: %s has no checkpoint yet; training restarts from step 0 in the same run", run_dir)
        return None
    raise ThinkerError(
        f"resume=true but there is no checkpoint at {ckpt_dir / LAST}",
        "resume",
        "pass hydra.run.dir=<the interrupted run's folder> with resume=true, or drop resume",
        stage="train",
    )
