"""GSM8K and HotpotQA records -> reasoning examples (docs/decisions/0010-cognate-pretraining-path.md): the
processors the reasoning and multihop_qa tasks (thinker.tasks) declare for method=pretrain.

Each record becomes a ReasoningExample:

    text    what the model trains on: the prompt, then the reasoning, then "Answer: <answer>"
    prompt  the text up to the reasoning (it ends with "Reasoning:"): held-out accuracy generates from it
    answer  the gold final answer, normalised as the record's own scoring does

GSM8K (conf/data/gsm8k.yaml): {"question", "answer"}, the answer being worked steps whose last line is
"#### <number>". GSM8K's calculator annotations (`<<48/2=24>>`) are dropped from the text: they are input to
the dataset authors' calculator tool, not reasoning a model should learn to write.

    Question: Natalia sold clips to 48 of her friends in April, ...
    Reasoning:
    Natalia sold 48/2 = 24 clips in May.
    Natalia sold 48+24 = 72 clips altogether in April and May.
    Answer: 72

HotpotQA (conf/data/hotpotqa.yaml), distractor setting: {"question", "answer", "context": [[title,
[sentence, ...]], ...], "supporting_facts": [[title, sentence index], ...]} (the "_id", "type" and "level"
fields are optional and not read). The context goes into the prompt as it is; the reasoning is the supporting
sentences, each marked with its paragraph title and sentence index, so the model learns to pick them out of
the distractors before it answers:

    Question: Which city was the founder of Velmora Systems born in?
    Context:
    Velmora Systems: Velmora Systems is a software company. It was founded by Arin Tesk in 1987.
    Arin Tesk: Arin Tesk is an engineer. Arin Tesk was born in Dunmere.
    Reasoning:
    [Velmora Systems, 1] It was founded by Arin Tesk in 1987.
    [Arin Tesk, 1] Arin Tesk was born in Dunmere.
    Answer: Dunmere

Scoring a generation (answer_correct) reads it up to a line starting "Question:" (a model pretrained on
concatenated examples may run on into a new one). GSM8K compares numbers: the one after the last "####", else
after the last "Answer:", else the last number. HotpotQA compares what follows the last "Answer:" (to the end of
its line) with the gold answer, both normalised as HotpotQA's exact match does (lower case, no punctuation, no
articles, single spaces).

check_hotpotqa_context / check_hotpotqa_supporting_facts are dataset-schema validators (conf/data/hotpotqa.yaml)
and check_gsm8k_answer one for conf/data/gsm8k.yaml: the validate stage calls them as fn(value, record).

Standard library only: the config check imports this module to resolve the validators, and the tasks import
it; neither may pay for torch.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

PROMPT_END = "Reasoning:"
ANSWER_PREFIX = "Answer:"
_NEXT_EXAMPLE = re.compile(r"(?m)^Question:")


@dataclass(frozen=True)
class ReasoningExample:
    text: str  # prompt + reasoning + "Answer: <answer>": what the language model trains on
    prompt: str  # the text up to (and with) "Reasoning:": generation starts after it
    answer: str  # the gold final answer, normalised (normalize_number / normalize_answer)


# ---------------------------------------------------------------- GSM8K

# "#### 72" on the answer's last line; GSM8K writes no thousands separators there, but some sources do
_FINAL_LINE = re.compile(r"(?m)^####[ \t]*(.*?)\s*\Z")
_CALCULATOR = re.compile(r"<<[^<>]*>>")
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?|-?\$?\.\d+")
_GENERATED_FINAL = re.compile(r"####\s*(-?\$?\d[\d,]*(?:\.\d+)?)")
_GENERATED_ANSWER = re.compile(r"Answer:\s*(-?\$?\d[\d,]*(?:\.\d+)?)")


def normalize_number(text: str) -> str | None:
    """A number as GSM8K's scoring compares them: no "$", no thousands separators, no trailing zeros after the
    point ("1,200.50" -> "1200.5", "72.0" -> "72", "-0" -> "0"); None if `text` is not a number."""
    cleaned = text.strip().replace(",", "").replace("$", "").rstrip(".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def split_gsm8k_answer(answer: str) -> tuple[str, str]:
    """(the reasoning steps without calculator annotations, the raw final answer after "####").

    Raises ValueError when the answer has no final "#### <answer>" line."""
    found = _FINAL_LINE.search(answer)
    if found is None:
        raise ValueError("the answer has no final '#### <answer>' line")
    steps = _CALCULATOR.sub("", answer[: found.start()])
    lines = [line.strip() for line in steps.splitlines() if line.strip()]
    return "\n".join(lines), found.group(1)


def gsm8k_example(record: Mapping[str, Any]) -> ReasoningExample:
    """A GSM8K record ({"question", "answer"}) as a pretraining example."""
    reasoning, final = split_gsm8k_answer(str(record["answer"]))
    gold = normalize_number(final)
    if gold is None:
        raise ValueError(f"the final answer {final!r} is not a number")
    prompt = f"Question: {_one_line(record['question'])}\n{PROMPT_END}"
    text = f"{prompt}\n{reasoning}\n{ANSWER_PREFIX} {gold}" if reasoning else f"{prompt}\n{ANSWER_PREFIX} {gold}"
    return ReasoningExample(text=text, prompt=prompt, answer=gold)


def gsm8k_generated_answer(generated: str) -> str | None:
    """The final answer a generation gives: the number after its last "####", else after its last "Answer:",
    else its last number, before any new "Question:" line; normalised. None when it holds no number."""
    generated = own_answer_part(generated)
    for pattern in (_GENERATED_FINAL, _GENERATED_ANSWER, _NUMBER):
        found = pattern.findall(generated)
        if found:
            return normalize_number(found[-1])
    return None


def gsm8k_answer_correct(generated: str, gold: str) -> bool:
    predicted = gsm8k_generated_answer(generated)
    return predicted is not None and predicted == normalize_number(gold)


# ---------------------------------------------------------------- HotpotQA

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """HotpotQA's (and SQuAD's) answer normalisation for exact match: lower case, punctuation and the articles
    a / an / the removed, whitespace collapsed."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def hotpotqa_example(record: Mapping[str, Any]) -> ReasoningExample:
    """A HotpotQA record (distractor setting) as a pretraining example; the supporting sentences, in the
    order supporting_facts lists them, are the reasoning."""
    paragraphs = {str(title): [str(s) for s in sentences] for title, sentences in record["context"]}
    context = "\n".join(f"{_one_line(title)}: {_join_sentences(sentences)}" for title, sentences in paragraphs.items())
    facts = []
    for title, index in record["supporting_facts"]:
        sentences = paragraphs.get(str(title))
        if sentences is None or not 0 <= int(index) < len(sentences):
            raise ValueError(f"supporting fact [{title!r}, {index}] is not a sentence of the context")
        facts.append(f"[{_one_line(str(title))}, {int(index)}] {_one_line(sentences[int(index)])}")
    answer = _one_line(str(record["answer"]))
    prompt = f"Question: {_one_line(record['question'])}\nContext:\n{context}\n{PROMPT_END}"
    text = prompt + "\n" + "\n".join(facts) + f"\n{ANSWER_PREFIX} {answer}"
    return ReasoningExample(text=text, prompt=prompt, answer=normalize_answer(answer))


def hotpotqa_generated_answer(generated: str) -> str | None:
    """What follows the last "Answer:" of a generation (before any new "Question:" line), to the end of its
    line, normalised; None without one."""
    generated = own_answer_part(generated)
    at = generated.rfind(ANSWER_PREFIX)
    if at < 0:
        return None
    return normalize_answer(generated[at + len(ANSWER_PREFIX) :].split("\n", 1)[0])


def hotpotqa_answer_correct(generated: str, gold: str) -> bool:
    predicted = hotpotqa_generated_answer(generated)
    return predicted is not None and predicted == normalize_answer(gold)


def own_answer_part(generated: str) -> str:
    """A generation up to a line that starts a new example ("Question: ..."), where its own answer ends."""
    found = _NEXT_EXAMPLE.search(generated)
    return generated if found is None else generated[: found.start()]


def _join_sentences(sentences: list[str]) -> str:
    # HotpotQA's sentences keep their leading space (" It was founded ..."): joined, they read as the paragraph
    return " ".join(_one_line(s) for s in sentences if s.strip())


def _one_line(text: Any) -> str:
    # a newline inside a field would break the line structure the prompt and the answer check rely on
    return " ".join(str(text).split())


# ---------------------------------------------------------------- reading a file


def read_examples(path: str | Path, example: Callable[[Mapping[str, Any]], ReasoningExample],
                  limit: int | None = None) -> list[ReasoningExample]:
    """The first `limit` records of a JSONL file, each made an example by `example` (a task's
    pretraining_example). The validate stage has checked the file; a record that still cannot be read raises
    ValueError with its line."""
    return list(iter_examples(path, example, limit))


def iter_examples(path: str | Path, example: Callable[[Mapping[str, Any]], ReasoningExample],
                  limit: int | None = None) -> Iterator[ReasoningExample]:
    count = 0
    with open(path, encoding="utf-8-sig") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            if limit is not None and count >= limit:
                return
            try:
                yield example(json.loads(line))
            except (ValueError, KeyError, TypeError) as error:
                raise ValueError(f"{path} line {line_no}: {type(error).__name__}: {error}") from None
            count += 1


# ---------------------------------------------------------------- dataset-schema validators


def check_gsm8k_answer(value: Any, record: Any) -> str | None:
    """answer: worked steps before the final "#### <number>" line, and a final answer that is a number."""
    try:
        reasoning, final = split_gsm8k_answer(value)
    except ValueError as error:
        return str(error)
    if not reasoning:
        return "has no reasoning steps before its '####' line"
    if normalize_number(final) is None:
        return f"final answer {final!r} after '####' is not a number"
    return None


def check_hotpotqa_context(value: Any, record: Any) -> str | None:
    """context: a list of [title, [sentence, ...]] pairs, titles non-empty and distinct, sentences strings."""
    seen: set[str] = set()
    for number, paragraph in enumerate(value):
        if not (isinstance(paragraph, list) and len(paragraph) == 2):
            return f"paragraph {number} is {_describe(paragraph)}, not a [title, [sentence, ...]] pair"
        title, sentences = paragraph
        if not isinstance(title, str) or not title.strip():
            return f"paragraph {number}: the title is {_describe(title)}, not a non-empty string"
        if title in seen:
            return f"paragraph {number}: title {title!r} appears twice"
        seen.add(title)
        if not isinstance(sentences, list) or not sentences:
            return f"paragraph {number} ({title!r}): sentences are {_describe(sentences)}, not a non-empty list"
        for index, sentence in enumerate(sentences):
            if not isinstance(sentence, str):
                return f"paragraph {number} ({title!r}): sentence {index} is {_describe(sentence)}, not a string"
    return None


def check_hotpotqa_supporting_facts(value: Any, record: Any) -> str | None:
    """supporting_facts: [title, sentence index] pairs naming a paragraph of the record's context and one of
    its sentences. A malformed context is reported on the context field, not again here."""
    context = record.get("context") if isinstance(record, dict) else None
    if not isinstance(context, list) or check_hotpotqa_context(context, record) is not None:
        return None
    sentence_counts = {title: len(sentences) for title, sentences in context}
    for number, fact in enumerate(value):
        if not (isinstance(fact, list) and len(fact) == 2):
            return f"fact {number} is {_describe(fact)}, not a [title, sentence index] pair"
        title, index = fact
        if not isinstance(title, str) or type(index) is not int:
            return f"fact {number} is {_describe(fact)}, not a [title, sentence index] pair"
        if title not in sentence_counts:
            return f"fact {number} names title {title!r}, which is not a paragraph of the context"
        if not 0 <= index < sentence_counts[title]:
            count = sentence_counts[title]
            return (f"fact {number} points at sentence {index} of {title!r}, which has {count} sentence"
                    f"{'' if count == 1 else 's'} (indices 0-{count - 1})")
    return None


def _describe(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:36] + "..."
