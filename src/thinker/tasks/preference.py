"""Preference pairs: a prompt (text, or chat messages) with a `chosen` and a `rejected` completion, trained by
objective=dpo (docs/objectives.md, "Preference tuning").

A record may come in any of the common shapes; `pair_from_record` turns each into one PreferencePair:

    flat           {"prompt": "...", "chosen": "...", "rejected": "..."}  (TRL's standard form; `prompt` may also
                   be a list of messages, or be given as `messages`, and chosen/rejected lists of assistant messages)
    conversations  {"chosen": [messages], "rejected": [messages]}: two whole conversations; the prompt is the
                   messages they share, the completions what follows (TRL's implicit prompt, Anthropic HH)
    openai         {"input": {"messages": [...]}, "preferred_output": [assistant messages],
                    "non_preferred_output": [assistant messages]}  (OpenAI's DPO fine-tuning files)
    comparison     {"comparison": {"prompt_conversation": [...], "completion_A": [...], "completion_B": [...]},
                    "label": "A" | "B"}  (tinker-cookbook's comparison files; "Tie" prefers neither: refused)

Text prompts are rendered by thinker.data.tokenize.render_prompt and the completion ends with the tokenizer's
end-of-sequence token, exactly as prompt/completion data; chat prompts go through the tokenizer's chat template
with the loss on the completion's assistant turns, as chat data (thinker.tasks.chat). So a pair's
`prompt + chosen` is tokenized the way supervised fine-tuning on the same record would be, and the loss
weights are 1 on the completion's tokens, 0 elsewhere (no CLAIM-line weighting: DPO compares summed
log-probabilities of whole completions, as TRL does).

The validate stage checks a record through `check_pair`, a schema validator (conf/data/preference.yaml puts
it on `rejected`; a file of another shape puts it on one of its own required fields): both sides present,
non-blank and different, each message a {role, content} with non-blank text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thinker.tasks.base import Task, jsonl_records, read_jsonl

PREFERENCE_FORMAT = "preference"
ASSISTANT = "assistant"
Messages = tuple[dict, ...]


@dataclass(frozen=True)
class PreferencePair:
    """One preference: `prompt` is text (rendered by render_prompt) or the chat messages before the reply;
    `chosen` / `rejected` are text completions for a text prompt, the assistant messages after a chat one."""

    prompt: str | Messages
    chosen: str | Messages
    rejected: str | Messages

    @property
    def is_chat(self) -> bool:
        return not isinstance(self.prompt, str)

    def side(self, name: str) -> str | Messages:
        return self.chosen if name == "chosen" else self.rejected


class PairProblem(ValueError):
    """What is wrong with a record as a preference pair (one line; the validate stage names the line)."""


# ---------------------------------------------------------------- converters from the common shapes


def _messages(value: Any, what: str) -> Messages:
    if not isinstance(value, list) or not value:
        raise PairProblem(f"{what} must be a non-empty list of {{role, content}} messages")
    for number, message in enumerate(value, start=1):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise PairProblem(f"{what} message {number} needs a role and a content")
        content = message.get("content")
        if not isinstance(content, str) or not content.strip():
            raise PairProblem(f"{what} message {number} ({message['role']}) has no text content")
    return tuple({"role": m["role"], "content": m["content"]} for m in value)


def _reply(value: Any, what: str) -> Messages:
    """A completion given as assistant messages (or as text, which becomes one assistant message)."""
    if isinstance(value, str):
        return ({"role": ASSISTANT, "content": _text(value, what)},)
    replies = _messages(value, what)
    if replies[-1]["role"] != ASSISTANT:
        raise PairProblem(f"{what} must end with an assistant message, not {replies[-1]['role']}")
    return replies


def _text(value: Any, what: str) -> str:
    if value is None:
        raise PairProblem(f"{what} is missing")
    if not isinstance(value, str):
        raise PairProblem(f"{what} must be text (or a list of messages), got {type(value).__name__}")
    if not value.strip():
        raise PairProblem(f"{what} is blank")
    return value


def _pair(prompt: str | Messages, chosen: Any, rejected: Any, names: tuple[str, str]) -> PreferencePair:
    for value, name in zip((chosen, rejected), names, strict=True):
        if value is None or value == []:
            raise PairProblem(f"{name} is missing (a pair needs both a chosen and a rejected completion)")
    if isinstance(prompt, str) and isinstance(chosen, str) and isinstance(rejected, str):
        pair = PreferencePair(prompt, _text(chosen, names[0]), _text(rejected, names[1]))
    else:
        context = ({"role": "user", "content": prompt},) if isinstance(prompt, str) else prompt
        pair = PreferencePair(context, _reply(chosen, names[0]), _reply(rejected, names[1]))
    if pair.chosen == pair.rejected:
        raise PairProblem(f"{names[0]} and {names[1]} are the same (a pair must prefer one completion to another)")
    return pair


def _from_flat(record: dict) -> PreferencePair:
    prompt = record.get("prompt", record.get("messages"))
    if prompt is None:
        raise PairProblem("prompt is missing (give `prompt` text or chat `messages`)")
    prompt = _text(prompt, "prompt") if isinstance(prompt, str) else _messages(prompt, "prompt")
    return _pair(prompt, record.get("chosen"), record.get("rejected"), ("chosen", "rejected"))


def _from_conversations(record: dict) -> PreferencePair:
    """Two whole conversations: the prompt is their shared beginning, up to the first message they differ in."""
    chosen, rejected = _messages(record["chosen"], "chosen"), _messages(record["rejected"], "rejected")
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    if shared == len(chosen) and shared == len(rejected):
        raise PairProblem("chosen and rejected are the same (a pair must prefer one completion to another)")
    if shared == 0:
        raise PairProblem("chosen and rejected share no prompt (both conversations must start with the same messages)")
    return _pair(chosen[:shared], list(chosen[shared:]), list(rejected[shared:]), ("chosen", "rejected"))


def _from_openai(record: dict) -> PreferencePair:
    source = record.get("input")
    if not isinstance(source, dict) or "messages" not in source:
        raise PairProblem("input.messages is missing (OpenAI's preference records: input {messages})")
    return _pair(_messages(source["messages"], "input.messages"), record.get("preferred_output"),
                 record.get("non_preferred_output"), ("preferred_output", "non_preferred_output"))


def _from_comparison(record: dict) -> PreferencePair:
    comparison, label = record["comparison"], record.get("label")
    if not isinstance(comparison, dict):
        raise PairProblem("comparison must be an object with prompt_conversation, completion_A and completion_B")
    if label not in ("A", "B"):
        raise PairProblem(f"label {label!r} prefers neither completion (a pair needs label A or B)")
    prompt = _messages(comparison.get("prompt_conversation"), "comparison.prompt_conversation")
    first, second = ("A", "B") if label == "A" else ("B", "A")
    return _pair(prompt, comparison.get(f"completion_{first}"), comparison.get(f"completion_{second}"),
                 (f"comparison.completion_{first}", f"comparison.completion_{second}"))


def pair_from_record(record: dict) -> PreferencePair:
    """The record as a PreferencePair, whichever common shape it has (see the module docstring); PairProblem
    says what is wrong otherwise."""
    if "comparison" in record:
        return _from_comparison(record)
    if "preferred_output" in record or "non_preferred_output" in record or "input" in record:
        return _from_openai(record)
    if "prompt" not in record and "messages" not in record and isinstance(record.get("chosen"), list):
        return _from_conversations(record)
    if "prompt" not in record and "messages" not in record and "chosen" not in record and "rejected" not in record:
        raise PairProblem("no preference pair: expected prompt/chosen/rejected, input/preferred_output/"
                          "non_preferred_output, chosen/rejected conversations or a comparison with a label")
    return _from_flat(record)


def check_pair(value: Any, record: Any) -> str | None:
    """A data.schema validator (fn(value, record)): None when the record is a usable pair, else the problem."""
    try:
        pair_from_record(record)
    except PairProblem as problem:
        return str(problem)
    return None


def read_pairs(path: str | Path, limit: int | None = None) -> list[PreferencePair]:
    """The pairs of a JSONL file the validate stage has checked (blank lines skipped)."""
    return [pair_from_record(record) for record in read_jsonl(path, limit)]


# ---------------------------------------------------------------- tokens


def prompt_text(tokenizer: Any, pair: PreferencePair) -> str:
    """The exact text the model continues: render_prompt for text, the chat template's generation prompt."""
    if pair.is_chat:
        from thinker.tasks.chat import render

        return render(tokenizer, pair.prompt, generation_prompt=True)
    from thinker.data.tokenize import render_prompt

    return render_prompt(str(pair.prompt))


def tokenize_completion(tokenizer: Any, pair: PreferencePair, side: str, max_length: int) -> Any:
    """prompt + one side (`chosen` / `rejected`) as a TokenizedExample: weights 1 on the completion's tokens."""
    completion = pair.side(side)
    if not pair.is_chat:
        from thinker.data.tokenize import tokenize_example

        return tokenize_example(tokenizer, str(pair.prompt), str(completion), max_length=max_length)
    return _tokenize_chat(tokenizer, tuple(pair.prompt), tuple(completion), max_length)


def _tokenize_chat(tokenizer: Any, prompt: Messages, completion: Messages, max_length: int) -> Any:
    # the chat task's spans, keeping the assistant turns of the completion only (not those of the prompt)
    from thinker.data.tokenize import IGNORE_INDEX, TokenizedExample
    from thinker.tasks.chat import render, trained_spans

    text, spans = trained_spans(tokenizer, [*prompt, *completion])
    prompt_end = len(render(tokenizer, prompt))
    spans = [(a, b) for a, b in spans if a >= prompt_end]
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = list(enc["input_ids"])
    trained = [any(a <= begin < b for a, b in spans) for begin, _end in enc["offset_mapping"]]
    labels = [t if keep else IGNORE_INDEX for t, keep in zip(input_ids, trained, strict=True)]
    weights = [1.0 if keep else 0.0 for keep in trained]
    if input_ids:
        labels[0], weights[0] = IGNORE_INDEX, 0.0
    truncated = len(input_ids) > max_length
    if truncated:
        input_ids, labels, weights = input_ids[:max_length], labels[:max_length], weights[:max_length]
    return TokenizedExample(input_ids, labels, weights, truncated)


def tokenize_pair(tokenizer: Any, pair: PreferencePair, max_length: int) -> tuple[Any, Any]:
    """(prompt + chosen, prompt + rejected), each a TokenizedExample whose weights cover its completion."""
    return (tokenize_completion(tokenizer, pair, "chosen", max_length),
            tokenize_completion(tokenizer, pair, "rejected", max_length))


def tokenize_pairs(tokenizer: Any, pairs: Sequence[PreferencePair], max_length: int) -> tuple[list[tuple[Any, Any]], int]:
    """(tokenize_pair of each pair that keeps a completion token on both sides within max_length, how many
    did not): training and the eval stage leave out the same pairs."""
    kept = [tokenize_pair(tokenizer, pair, max_length) for pair in pairs]
    kept = [(c, r) for c, r in kept if c.trained_tokens and r.trained_tokens]
    return kept, len(pairs) - len(kept)


# ---------------------------------------------------------------- the task


class PreferenceTask(Task):
    name = PREFERENCE_FORMAT
    pairs = True
    generation_metrics = ()
    default_objective = "pref_accuracy"
    default_direction = "maximize"

    @property
    def eval_metrics(self) -> tuple[str, ...]:
        # held-out pairs scored by the trained policy against its reference (the eval stage)
        return ("pref_accuracy", "pref_margin")

    def read(self, path: str | Path, data: Any, limit: int | None = None) -> Sequence[Any]:
        from thinker.data.records import MappedRecords

        return MappedRecords(jsonl_records(path, limit), pair_from_record)

    def tokenize(self, tokenizer: Any, example: Any, *, max_length: int, data: Any, train_on_inputs: bool) -> Any:
        """The prompt with the chosen completion: what the data preview shows (objective=dpo trains on
        tokenize_pair's two sequences)."""
        return tokenize_completion(tokenizer, example, "chosen", max_length)

    def conversation(self, example: Any) -> dict:
        prompt = (list(example.prompt) if example.is_chat
                  else [{"role": "user", "content": prompt_text(None, example)}])
        chosen = list(example.chosen) if example.is_chat else [{"role": ASSISTANT, "content": example.chosen}]
        return {"messages": [dict(m) for m in prompt + chosen]}

    def generation_prompt(self, example: Any, tokenizer: Any) -> str:
        return prompt_text(tokenizer() if example.is_chat else None, example)

    def score_generations(self, examples: Sequence[Any], completions: Sequence[str]) -> dict[str, float]:
        return {}


TASK = PreferenceTask()
