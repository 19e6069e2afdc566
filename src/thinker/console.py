"""The console: third-party chatter turned down, and Hydra's output held back until a job starts.

Quiet by default: third-party chatter is turned down at its source, one logger or warning at a time. Each
entry names the library's own logger or the exact warning, never all warnings at once, so anything
unexpected still shows. `debug=true` skips all of this and shows everything.

Held stderr: thinker.launch.entry holds stderr back while Hydra composes (to fold a composition error into one
line); a job calls release_stderr() as its first act, so everything it prints goes straight through.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import warnings

# logger -> the lowest level still shown
SOURCE_LOGGERS = {
    "bitsandbytes.backends.cpu.ops": logging.ERROR,  # "pip install kernels" hint for an optional CPU kernel
    "mlflow.store.db.utils": logging.WARNING,  # "Creating initial MLflow database tables..." on a new store
    "alembic": logging.WARNING,  # MLflow's schema migrations, line by line
    "sentence_transformers": logging.WARNING,  # "Loading SentenceTransformer model from ..." (evaluation)
    "transformers.integrations.bitsandbytes": logging.ERROR,  # dtype note when dequantising a QLoRA base
    "httpx": logging.WARNING,  # one line per HTTP request (the Tinker SDK, the backend=tinker probe)
    "tinker": logging.WARNING,  # "ServiceClient initialized for session ..." per client
}

# (message regex, category): warnings that say nothing a user of thinker can act on
SOURCE_WARNINGS = [
    # transformers 5 renamed the property peft still reads
    (r".*is_gradient_checkpointing.*is deprecated.*", FutureWarning),
    # Lightning, when a resumed or re-used run folder already holds checkpoints (that is the point of resume)
    (r".*Checkpoint directory .* exists and is not empty.*", UserWarning),
]


def quiet_third_party() -> None:
    for name, level in SOURCE_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    for message, category in SOURCE_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    # "Loading weights" / "Writing model shards" bars: the Hugging Face switch transformers reads when it is
    # imported (set here, before it is; a validate-only run never imports it at all)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # MLflow's "Downloading artifacts" bar (a sweep job reads the run record of the run it reuses)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if "transformers.utils.logging" in sys.modules:
        sys.modules["transformers.utils.logging"].disable_progress_bar()


_held: io.StringIO | None = None
_real_stderr = None


def hold_stderr() -> None:
    """Hold what is written to stderr back (until release_stderr or take_held_stderr)."""
    global _held, _real_stderr
    _real_stderr, _held = sys.stderr, io.StringIO()
    sys.stderr = _held


def take_held_stderr() -> str | None:
    """Stop holding stderr back and return what was held, unwritten; None when nothing was held."""
    global _held, _real_stderr
    if _held is None:
        return None
    held_text = _held.getvalue()
    sys.stderr = _real_stderr
    _held, _real_stderr = None, None
    return held_text


def release_stderr() -> None:
    """Stop holding stderr back and pass on whatever Hydra printed meanwhile (warnings, deprecations)."""
    held_text = take_held_stderr()
    if held_text:
        sys.stderr.write(held_text)
