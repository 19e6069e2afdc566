"""Turn a prompt/completion pair into token ids, labels and per-token loss weights.

Loss is taken on completion tokens only (the prompt is masked with -100) unless train_on_inputs is on.
For the claim-extraction format, its token-level weights apply (docs/decisions/0011-same-training-on-every-backend.md): the CLAIM[c1] line counts
`claim_c1_weight` times, evidence claim lines `evidence_weight` times, everything else once.
The prompt is rendered by render_prompt, the one function evaluation uses too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from thinker.data.claim_format import C1_LINE_PREFIX, CLAIM_PREFIX

IGNORE_INDEX = -100
PROMPT_SEPARATOR = "\n"


def render_prompt(prompt: str) -> str:
    """The exact text the model sees before its completion, in training and in generation."""
    return prompt + PROMPT_SEPARATOR


@dataclass
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]
    weights: list[float]
    truncated: bool = False

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def trained_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


@dataclass(frozen=True)
class LossWeights:
    claim_c1: float = 1.0
    evidence: float = 1.0

    @property
    def uniform(self) -> bool:
        return self.claim_c1 == 1.0 and self.evidence == 1.0


def line_weights(completion: str, weights: LossWeights) -> list[tuple[int, int, float]]:
    """(start, end, weight) character spans, one per completion line (the newline belongs to its line)."""
    spans, start = [], 0
    for line in completion.splitlines(keepends=True):
        stripped = line.lstrip()
        if stripped.startswith(C1_LINE_PREFIX):
            w = weights.claim_c1
        elif stripped.startswith(CLAIM_PREFIX):
            w = weights.evidence
        else:
            w = 1.0
        spans.append((start, start + len(line), w))
        start += len(line)
    return spans


def completion_token_weights(offsets: list[tuple[int, int]], completion: str, weights: LossWeights) -> list[float]:
    if weights.uniform:
        return [1.0] * len(offsets)
    spans = line_weights(completion, weights)
    out, i = [], 0
    for begin, _end in offsets:
        while i < len(spans) - 1 and begin >= spans[i][1]:
            i += 1
        out.append(spans[i][2] if spans else 1.0)
    return out


def tokenize_example(
    tokenizer: Any,
    prompt: str,
    completion: str,
    *,
    max_length: int,
    weights: LossWeights = LossWeights(),
    train_on_inputs: bool = False,
) -> TokenizedExample:
    prompt_ids = tokenizer(render_prompt(prompt), add_special_tokens=False)["input_ids"]
    enc = tokenizer(completion, add_special_tokens=False, return_offsets_mapping=True)
    completion_ids = list(enc["input_ids"]) + [tokenizer.eos_token_id]
    completion_w = completion_token_weights(list(enc["offset_mapping"]), completion, weights) + [1.0]

    input_ids = list(prompt_ids) + completion_ids
    if train_on_inputs:
        labels = list(input_ids)
        token_weights = [1.0] * len(prompt_ids) + completion_w
    else:
        labels = [IGNORE_INDEX] * len(prompt_ids) + completion_ids
        token_weights = [0.0] * len(prompt_ids) + completion_w
    # The first token has no preceding context inside its example; never train on predicting it
    # (in a packed row it would be predicted from the previous example's last token).
    labels[0], token_weights[0] = IGNORE_INDEX, 0.0
    truncated = len(input_ids) > max_length
    if truncated:
        input_ids, labels, token_weights = input_ids[:max_length], labels[:max_length], token_weights[:max_length]
    return TokenizedExample(input_ids, labels, token_weights, truncated)
