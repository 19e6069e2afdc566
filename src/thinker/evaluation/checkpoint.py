"""Which trained weights the eval stage scores, and a clear error when there are none."""

from __future__ import annotations

from pathlib import Path

from thinker.errors import ThinkerError

WEIGHTS = "weights"  # the folder training writes (thinker.backends.local.backend.WEIGHTS)


def is_weights_dir(path: Path) -> bool:
    """A PEFT adapter folder or a full save_pretrained model folder."""
    return (path / "adapter_config.json").is_file() or any(path.glob("*.safetensors"))


def find_checkpoint(configured: str | None, run_dir: Path, trained: Path | None = None) -> Path:
    """evaluation.checkpoint_dir (a weights/ folder or a run folder holding one), else the weights this run
    just trained, else <run_dir>/weights."""
    if configured:
        candidates = [Path(configured).expanduser() / WEIGHTS, Path(configured).expanduser()]
        where = f"evaluation.checkpoint_dir={configured}"
    else:
        candidates = ([trained] if trained else []) + [run_dir / WEIGHTS]
        where = f"run folder {run_dir}"
    for candidate in candidates:
        if candidate.is_dir() and is_weights_dir(candidate):
            return candidate
    raise ThinkerError(
        f"no trained checkpoint to evaluate (looked for {' and '.join(str(c) for c in candidates)})",
        where,
        "run the train stage first (stage=train or stage=run), then evaluate with hydra.run.dir=<that run folder> "
        "or evaluation.checkpoint_dir=<its weights folder>",
        stage="eval",
    )
