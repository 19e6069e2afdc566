"""Sampling for reinforcement learning on the local backend: a group of completions per prompt from the policy
itself (`model.generate` with its KV cache, every prompt of the step in one left-padded batch), with the
sampler's log-probability of each sampled token, and the trainer's view of the same tokens.

The sampler's log-probabilities are log-softmax of the raw logits (temperature 1, no top-p), as thinker
tinker-serve and Tinker report them: a forward pass over the same tokens with the same weights gives the same
numbers up to float rounding, which `kl/sample_train` shows (docs/objectives.md, "Reinforcement learning").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Rollout:
    """`n` = prompts x group_size sampled sequences, each row its prompt (left-padded) then its completion
    (right-padded after its end-of-sequence token, which is kept: the policy learns to stop)."""

    input_ids: torch.Tensor  # [n, prompt + completion]
    attention_mask: torch.Tensor  # [n, prompt + completion]: 0 on padding
    prompt_width: int  # completion tokens start at this column
    completion_mask: torch.Tensor  # [n, completion]: 1 on sampled tokens (up to and including EOS)
    sampler_logprobs: torch.Tensor  # [n, completion]: 0 off the mask
    completions: list[str]  # decoded, special tokens left out

    @property
    def completion_ids(self) -> torch.Tensor:
        return self.input_ids[:, self.prompt_width:]

    def token_lists(self) -> tuple[list[list[int]], list[list[float]]]:
        """Each completion's sampled token ids and sampler log-probabilities, without padding."""
        ids, lps = [], []
        for row in range(self.input_ids.shape[0]):
            n = int(self.completion_mask[row].sum())
            ids.append(self.completion_ids[row, :n].tolist())
            lps.append(self.sampler_logprobs[row, :n].tolist())
        return ids, lps


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted from each row's first real token (what generate derives for left padding)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def completion_mask(tokens: torch.Tensor, eos_ids: set[int]) -> torch.Tensor:
    """1 up to and including the first end-of-sequence token of each row, 0 after it."""
    is_eos = torch.zeros_like(tokens, dtype=torch.bool)
    for eos in eos_ids:
        is_eos |= tokens == eos
    ended_before = (is_eos.long().cumsum(-1) - is_eos.long()) > 0  # an EOS earlier in the row
    return (~ended_before).long()


def eos_ids(tokenizer: Any, model: Any) -> set[int]:
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids = set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids


@torch.no_grad()
def sample_groups(model: Any, tokenizer: Any, prompts: list[str], group_size: int, *, temperature: float,
                  top_p: float, max_new_tokens: int) -> Rollout:
    """`group_size` completions of each prompt (consecutive rows), sampled at `temperature` / `top_p`."""
    tokenizer.padding_side = "left"  # every row continues its own prompt
    device = next(model.parameters()).device
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    ids = batch["input_ids"].repeat_interleave(group_size, dim=0)
    mask = batch["attention_mask"].repeat_interleave(group_size, dim=0)
    was_training = model.training
    model.eval()
    try:
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=temperature,
                             top_p=top_p, top_k=0, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=sorted(eos_ids(tokenizer, model)), output_logits=True,
                             return_dict_in_generate=True, use_cache=True)
    finally:
        model.train(was_training)
    width = ids.shape[1]
    tokens = out.sequences[:, width:]
    logits = torch.stack(out.logits, dim=1).float()  # [n, new, vocab]: raw, before temperature and top-p
    lp = torch.log_softmax(logits, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    done = completion_mask(tokens, eos_ids(tokenizer, model))
    full_mask = torch.cat([mask, done], dim=1)
    tokens = torch.where(done.bool(), tokens, torch.full_like(tokens, tokenizer.pad_token_id))
    return Rollout(torch.cat([ids, tokens], dim=1), full_mask, width, done, lp * done,
                   tokenizer.batch_decode(tokens, skip_special_tokens=True))


def completion_logprobs(model: Any, rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's log-probability of each sampled token ([n, completion], differentiable) and the entropy of
    its next-token distribution there (detached), from one forward pass over prompt + completion."""
    logits = model(input_ids=rollout.input_ids, attention_mask=rollout.attention_mask,
                   position_ids=position_ids(rollout.attention_mask), use_cache=False).logits
    # position t predicts token t + 1: the completion's tokens are predicted from prompt_width - 1 on
    predicting = logits[:, rollout.prompt_width - 1:-1].float()
    logprobs_all = torch.log_softmax(predicting, dim=-1)
    logprobs = logprobs_all.gather(-1, rollout.completion_ids.unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():
        entropy = -(logprobs_all.exp() * logprobs_all).sum(-1)
    return logprobs, entropy
