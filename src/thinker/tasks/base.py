"""What a data task declares (docs/data.md, "Data tasks"): how its records are read, how one record becomes
tokens with loss weights, what the eval stage reports for it and which metric a sweep optimises by default.

The stages, the config rules, the search objective and the data preview ask the task chosen by `data.format`
(or `data.task`, a module of the user's own); none of them names a format. Importing a task is light
(no torch, transformers or mlflow): the config check asks tasks too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

HELDOUT_METRICS = ("heldout_loss", "perplexity")  # every task evaluated on its held-out split reports these


def read_jsonl(path: str | Path, limit: int | None = None) -> list[dict]:
    """The records of a JSONL file the validation stage has already checked (blank lines skipped)."""
    out: list[dict] = []
    with open(path, encoding="utf-8-sig") as fh:
        for line in fh:
            if not line.strip():
                continue
            out.append(json.loads(line))
            if limit is not None and len(out) >= limit:
                break
    return out


def jsonl_records(path: str | Path, limit: int | None = None) -> Sequence[dict]:
    """read_jsonl's records, each parsed when it is read: a large file is never held in memory
    (thinker.data.records; docs/data.md, "Large files and hub datasets")."""
    from thinker.data.records import JsonlRecords

    return JsonlRecords(path, limit)


class Task:
    """A data format. Subclasses set the class attributes and override what differs from prompt/completion."""

    name: ClassVar[str] = ""
    fine_tunes: ClassVar[bool] = True  # the fine-tuning methods train on it (full, lora, qlora)
    pretrains: ClassVar[bool] = False  # method=pretrain trains on it (its own processors, thinker.pretraining)
    # the eval stage scores SciFact claims (evaluation.claims_file), not the data's held-out split
    scores_claims: ClassVar[bool] = False
    generation_metrics: ClassVar[tuple[str, ...]] = ()  # what the held-out generation check adds
    default_objective: ClassVar[str] = "val_loss"  # what a sweep over this data optimises unless told
    # its tokens come from the tokenizer's chat template (Jinja, rendered by transformers only): counting them
    # before a run (thinker estimate) needs the tokenizer training loads
    renders_chat_template: ClassVar[bool] = False
    default_direction: ClassVar[str] = "minimize"  # and which way: minimize | maximize
    # its records are chosen/rejected pairs, trained by objective=dpo only (thinker.tasks.preference)
    pairs: ClassVar[bool] = False

    @property
    def eval_metrics(self) -> tuple[str, ...]:
        """The metrics the eval stage reports for this data."""
        return HELDOUT_METRICS + self.generation_metrics

    def describe(self) -> str:
        return f"data.format={self.name}"

    # ---------------------------------------------------------------- records and tokens

    def read(self, path: str | Path, data: Any, limit: int | None = None) -> Sequence[Any]:
        """The examples of a (validated) data file; `data` is the data config. A list, or a Sequence that reads
        each example when asked for it (jsonl_records), so that a file larger than memory trains."""
        raise NotImplementedError

    def tokenize(self, tokenizer: Any, example: Any, *, max_length: int, data: Any, train_on_inputs: bool) -> Any:
        """A thinker.data.tokenize.TokenizedExample: input ids, labels (-100 untrained) and loss weights."""
        raise NotImplementedError

    def conversation(self, example: Any) -> dict:
        """The example as a chat conversation ({"messages": [...]}): what a hosted provider is uploaded."""
        raise NotImplementedError

    # ---------------------------------------------------------------- the held-out generation check

    def generation_prompt(self, example: Any, tokenizer: Callable[[], Any]) -> str:
        """The text the model continues for `example` (`tokenizer()` loads the model's tokenizer if needed)."""
        raise NotImplementedError

    def score_generations(self, examples: Sequence[Any], completions: Sequence[str]) -> dict[str, float]:
        """The generation_metrics of the held-out examples' generated completions."""
        return {}

    def generation_conversation(self, example: Any) -> list[dict]:
        """What a backend that samples conversations (a hosted provider) is given for `example`: the
        conversation training uploaded (conversation()), less its last reply."""
        return self.conversation(example)["messages"][:-1]

    def user_prompt(self, text: str, tokenizer: Callable[[], Any]) -> str:
        """What a model trained on this data continues for a user's own prompt (`thinker chat`, `thinker
        generate`): rendered as training rendered its prompts (`tokenizer()` loads the model's tokenizer)."""
        from thinker.data.tokenize import render_prompt

        return render_prompt(text)

    # ---------------------------------------------------------------- method=pretrain (pretrains=True)

    def pretraining_example(self, record: Mapping[str, Any]) -> Any:
        """A record as a thinker.data.reasoning.ReasoningExample: the text pretraining trains on, the prompt
        held-out accuracy generates from, and the gold answer."""
        raise NotImplementedError

    def pretraining_answer_correct(self, generated: str, gold: str) -> bool:
        """Whether a generation from a pretraining example's prompt gives its gold answer."""
        raise NotImplementedError
