"""Training data in memory: read, split, tokenise with the model's tokenizer, pack (or not) into rows.

One function for every backend, so backend=local and backend=tinker train on exactly the same tokens,
prompt masking and loss weights (docs/decisions/0011-same-training-on-every-backend.md).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from thinker.data.packing import Row, pack_rows, single_rows
from thinker.data.tokenize import TokenizedExample
from thinker.errors import ThinkerError
from thinker.tasks import Task, task_of

log = logging.getLogger("thinker")

# examples tokenised and packed together (tokenized_data): more than any shipped file has, few enough that a
# chunk's token lists stay far below a gigabyte
CHUNK_EXAMPLES = 10_000


@dataclass
class TokenStats:
    examples: int
    truncated: int
    tokens: int
    trained_tokens: int
    rows: int


def tokenize_all(task: Task, tokenizer: Any, examples: Sequence[Any], max_length: int, data: Any,
                 train_on_inputs: bool) -> list[TokenizedExample]:
    """The data task's tokens, labels and loss weights for each example (thinker.tasks)."""
    return [task.tokenize(tokenizer, ex, max_length=max_length, data=data, train_on_inputs=train_on_inputs)
            for ex in examples]


def make_rows(tokenized: list[TokenizedExample], max_length: int, packed: bool) -> list[Row]:
    return pack_rows(tokenized, max_length) if packed else single_rows(tokenized)


def stats(tokenized: list[TokenizedExample], rows: list[Row]) -> TokenStats:
    return TokenStats(
        examples=len(tokenized),
        truncated=sum(t.truncated for t in tokenized),
        tokens=sum(len(t) for t in tokenized),
        trained_tokens=sum(t.trained_tokens for t in tokenized),
        rows=len(rows),
    )


@dataclass
class PreparedData:
    train: list[TokenizedExample]
    val: list[TokenizedExample]
    train_rows: list[Row]
    val_rows: list[Row]
    stats: TokenStats  # of the training split
    read_train_examples: int  # before examples without a trainable token were left out
    read_val_examples: int = 0
    split_train_examples: int = 0  # in the training split; more than read_train_examples when max_steps cut it


def prepare_training_data(cfg: DictConfig, run_dir: Path, tokenizer: Any, packed: bool) -> PreparedData:
    """The run's train / held-out rows. Held-out is empty with trainer.evaluations=0 (sweepers then use
    train_loss); an example whose completion max_seq_length cuts off entirely teaches nothing and is left out."""
    from thinker.data.source import effective_data_path

    prepared = tokenized_data(cfg, effective_data_path(cfg, run_dir), tokenizer, packed)
    st, max_len = prepared.stats, int(cfg.trainer.max_seq_length)
    read = prepared.read_train_examples + prepared.read_val_examples
    log.info("data: %d train / %d held-out examples, %d tokens in %d rows (packing %s), %d truncated, "
             "%d left out (no completion token within max_seq_length)", len(prepared.train), len(prepared.val),
             st.tokens, st.rows, "on" if packed else "off", st.truncated, read - len(prepared.train) - len(prepared.val))
    if prepared.split_train_examples > prepared.read_train_examples:
        log.info("data: trainer.max_steps trains on the first %d of the %d training examples (tokenised %d at a "
                 "time; docs/data.md, \"Large files and hub datasets\")", prepared.read_train_examples,
                 prepared.split_train_examples, CHUNK_EXAMPLES)
    if st.trained_tokens == 0:
        raise ThinkerError(
            f"no completion token survives trainer.max_seq_length={max_len} (prompts fill every sequence)",
            "trainer.max_seq_length", "raise trainer.max_seq_length (the sample data needs about 768)", stage="train",
        )
    return prepared


def tokenized_data(cfg: DictConfig, data_path: Path, tokenizer: Any, packed: bool) -> PreparedData:
    """prepare_training_data's rows from `data_path`, quietly: what the run trains on, and what its estimate
    counts (thinker.estimate) before the run.

    The examples are read one at a time (the task's read() indexes the file; thinker.data.records) and
    tokenised and packed CHUNK_EXAMPLES at a time in the split's seeded order, so memory follows the chunks
    used, not the file (docs/data.md, "Large files and hub datasets"). Data of one chunk (every shipped file)
    is tokenised and packed as a whole, as it always was. A run capped by trainer.max_steps stops at the
    chunk that gives its steps rows enough; the held-out loss takes the first chunk of the held-out split."""
    from thinker.data.examples import split_indices
    from thinker.data.records import Picked

    task = task_of(cfg.data)
    examples = task.read(data_path, cfg.data, cfg.data.max_examples)
    train_idx, val_idx = split_indices(len(examples), float(cfg.data.validation_split), int(cfg.seed))
    if int(cfg.trainer.evaluations) == 0:
        val_idx = []
    max_len = int(cfg.trainer.max_seq_length)
    on_inputs = str(cfg.trainer.train_on_inputs) == "enabled"

    def tokenized_rows(indices: list[int], rows_needed: int | None) -> tuple[list[TokenizedExample], list[Row], int]:
        tokenized: list[TokenizedExample] = []
        rows: list[Row] = []
        read = 0
        for first in range(0, len(indices), CHUNK_EXAMPLES):
            chunk = Picked(examples, indices[first : first + CHUNK_EXAMPLES])
            kept = [t for t in tokenize_all(task, tokenizer, chunk, max_len, cfg.data, on_inputs) if t.trained_tokens]
            tokenized += kept
            rows += make_rows(kept, max_len, packed)
            read += len(chunk)
            if rows_needed is not None and len(rows) >= rows_needed:
                break
        return tokenized, rows, read

    train_tok, train_rows, read_train = tokenized_rows(train_idx, rows_for_max_steps(cfg))
    val_tok, val_rows, read_val = tokenized_rows(val_idx[:CHUNK_EXAMPLES], None)
    return PreparedData(train_tok, val_tok, train_rows, val_rows, stats(train_tok, train_rows), read_train, read_val,
                        len(train_idx))


def rows_for_max_steps(cfg: DictConfig) -> int | None:
    """The rows a run capped by trainer.max_steps trains on at most (its steps x micro-batches x batch size x
    processes); None when it is not capped, or its processes are not a count in the config (devices=auto)."""
    max_steps = int(cfg.trainer.max_steps)
    devices = cfg.trainer.get("devices", 1)
    if max_steps <= 0:
        return None
    if isinstance(devices, int) and devices > 0:
        processes = devices
    elif OmegaConf.is_list(devices) or isinstance(devices, list):
        processes = len(devices)
    else:
        return None
    processes *= int(cfg.trainer.get("num_nodes", 1) or 1)
    return max_steps * int(cfg.trainer.grad_accum) * int(cfg.trainer.batch_size) * processes
