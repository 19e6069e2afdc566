"""The Cognate model (docs/decisions/0010-cognate-pretraining-path.md) as a transformers model: CognateConfig and CognateForCausalLM.

    tokens -> embedding -> n_layers decoder blocks -> long-term memory (read) -> ACT loop over the shared
    transition (act_layers blocks, up to max_ponder_steps times per token) -> LayerNorm -> tied LM head

Decoder blocks are pre-norm GPT blocks: causal multi-head self-attention (torch SDPA) with rotary positions,
and a GELU MLP. Attention never crosses examples: a position id of 0 starts a new example, as in the
packed rows of thinker.data.packing, and padding (attention_mask 0) is never attended to.

Adaptive computation time (Graves 2016, as the Universal Transformer applies it per token): each step runs
the transition on every token, then a halting unit gives each token a probability p. A token halts at the
first step N where its cumulative p reaches act_threshold (1 - epsilon), or at max_ponder_steps; its output
is the mix of its states with weights p_1..p_{N-1} and the remainder R = 1 - (p_1 + ... + p_{N-1}), which
sum to 1. The ponder cost N + R, averaged over real tokens, is added to the loss with weight ponder_weight:
its gradient raises the early halting probabilities, so it pushes towards fewer steps.

Long-term memory: `memory_slots` learned vectors, the state every example starts from. Each example is cut
into chunks of `memory_chunk` tokens. A token reads the memory by attention (queries from the token, keys and
values from the slots) as it stands after the writes of its example's earlier chunks; after each chunk, the
chunk's mean state writes into the slots under a learned gate g = sigmoid(w . x + b), spread over slots by
content addressing a: M <- (1 - g a) * M + g a * content(x). So nothing a token reads comes from its own
chunk or later (no future leakage), and g = 0 leaves the memory as it was.

Generation keeps a KV cache (CognateCache) that computes what a pass over the whole sequence computes. Under
causal attention no token's state at any layer, memory read or ACT step depends on a later token, so:
  - plain layers: the usual per-layer keys and values;
  - ACT: keys and values per (ponder step, transition block). Every step runs the transition on every token,
    halted or not (halting only sets the mixing weights), so a past token's state at step s is the same whatever
    the tokens after it do. A new token can ponder longer than every past one, so the cached path runs all
    max_ponder_steps for every token (the whole-sequence pass stops early only when every weight left is 0);
  - memory: each row's memory as its current chunk reads it, plus that chunk's running sum and count. A chunk's
    write is applied when the row's next chunk begins, which is when the whole-sequence pass applies it.
Only summation order differs, so logits agree within float tolerance (tests/test_cognate_model.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    DynamicCache,
    GenerationMixin,
    PreTrainedConfig,
    PreTrainedModel,
)
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from thinker.models.adapters.cognate_spec import (
    FORMAT_VERSION,
    PARAM_TOLERANCE,
    SPEC_25M,
    check_budget,
    parameter_count,
)

IGNORE_INDEX = -100


class CognateConfig(PreTrainedConfig):
    """The architecture (config.json, model_type "cognate"). The defaults are the 25M specification, whose
    parameter count is checked against `param_budget` here, at construction; `param_budget=None` skips the
    check (small test models)."""

    model_type = "cognate"
    attribute_map = {"hidden_size": "d_model", "num_attention_heads": "n_heads", "intermediate_size": "d_ff",
                     "max_position_embeddings": "max_seq_len"}

    vocab_size: int = SPEC_25M["vocab_size"]
    d_model: int = SPEC_25M["d_model"]
    n_heads: int = SPEC_25M["n_heads"]
    d_ff: int = SPEC_25M["d_ff"]
    n_layers: int = SPEC_25M["n_layers"]
    act_layers: int = SPEC_25M["act_layers"]
    max_ponder_steps: int = SPEC_25M["max_ponder_steps"]
    act_threshold: float = SPEC_25M["act_threshold"]
    ponder_weight: float = SPEC_25M["ponder_weight"]
    memory_slots: int = SPEC_25M["memory_slots"]
    memory_chunk: int = SPEC_25M["memory_chunk"]
    max_seq_len: int = SPEC_25M["max_seq_len"]
    rope_theta: float = SPEC_25M["rope_theta"]
    tie_word_embeddings: bool = SPEC_25M["tie_word_embeddings"]
    dropout: float = 0.0
    norm_eps: float = 1e-5
    initializer_range: float = 0.02
    halt_bias_init: float = 1.0  # p = sigmoid(1) = 0.73 at the start: most tokens take two steps
    param_budget: int | None = 25_000_000
    param_tolerance: float = PARAM_TOLERANCE
    cognate_format: int = FORMAT_VERSION
    use_cache: bool = True  # generate() keeps a CognateCache; forward() builds one only when asked (use_cache=True)
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(f"d_model ({self.d_model}) must split into n_heads ({self.n_heads}) heads of even "
                             "width (rotary positions rotate pairs)")
        for key in ("vocab_size", "d_ff", "act_layers", "max_ponder_steps", "memory_slots", "memory_chunk",
                    "max_seq_len"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"{key} must be at least 1 (got {getattr(self, key)})")
        if self.n_layers < 0:
            raise ValueError(f"n_layers must not be negative (got {self.n_layers})")
        if not 0.0 < self.act_threshold < 1.0:
            raise ValueError(f"act_threshold is 1 - epsilon, in (0, 1) (got {self.act_threshold})")
        if self.ponder_weight < 0:
            raise ValueError(f"ponder_weight must not be negative (got {self.ponder_weight})")
        check_budget(self.parameter_count(), self.param_budget, self.param_tolerance)

    def arch(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in SPEC_25M}

    def parameter_count(self) -> int:
        return parameter_count(self.arch())


@dataclass
class CognateCausalLMOutput(ModelOutput):
    """loss: lm_loss + ponder_weight * ponder_cost (with labels). The rest, for logging and tests:
    lm_loss: the next-token cross-entropy; ponder_cost: mean N + R over real tokens (differentiable);
    ponder_steps: mean N over real tokens; token_ponder_steps: N per token (batch, length);
    halting_weights: each token's weight per step (batch, length, max_ponder_steps), summing to 1;
    memory_write_gate: mean write gate over the chunks that wrote; memory_read_entropy: the entropy of the
    read attention over slots, divided by log(memory_slots) (1: reads every slot alike), mean over real tokens;
    memory_read_norm: the mean L2 norm of what the memory read adds to a real token's state."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    lm_loss: torch.Tensor | None = None
    ponder_cost: torch.Tensor | None = None
    ponder_steps: torch.Tensor | None = None
    token_ponder_steps: torch.Tensor | None = None
    halting_weights: torch.Tensor | None = None
    memory_write_gate: torch.Tensor | None = None
    memory_read_entropy: torch.Tensor | None = None
    memory_read_norm: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    past_key_values: CognateCache | None = None


# ---------------------------------------------------------------- token layout (examples, padding, chunks)


@dataclass
class Layout:
    """Where each token stands: real or padding, its position, its example (segment) and its memory chunk."""

    valid: torch.Tensor  # (B, L) bool: not padding
    positions: torch.Tensor  # (B, L) rotary positions
    segment: torch.Tensor  # (B, L) example index within the row
    chunk: torch.Tensor  # (B, L) memory chunk within the example (meaningful for real tokens)
    offset: torch.Tensor  # (B, L) place within the chunk
    # (B, 1, L, L) bool, True where a query may attend to a key; None: plain causal attention (one example per
    # row, no left padding, as in pretraining), which lets SDPA pick its fastest kernels
    attention_mask: torch.Tensor | None


def token_layout(input_shape: torch.Size, device: torch.device, chunk_size: int,
                 attention_mask: torch.Tensor | None, position_ids: torch.Tensor | None) -> Layout:
    batch, length = input_shape
    valid = attention_mask.bool() if attention_mask is not None else torch.ones(batch, length, dtype=torch.bool,
                                                                                  device=device)
    counted = valid.long().cumsum(-1)
    if position_ids is None:
        # left padding (generate) shifts every row's positions so its first real token is at 0
        positions = (counted - 1).clamp(min=0)
        starts = torch.zeros(batch, length, dtype=torch.bool, device=device)
    else:
        positions = position_ids.to(device).long()
        starts = positions == 0  # packed rows: each example's positions restart at 0
    starts[:, 0] = True
    segment = starts.long().cumsum(-1) - 1
    # a real token's index among its example's real tokens: real tokens before it, minus those before the example
    before = counted - valid.long()
    base = torch.cummax(torch.where(starts, before, torch.zeros_like(before)), dim=-1).values
    index = before - base
    # padding after a row's tokens needs no mask: causal attention never looks ahead (pad queries are ignored)
    left_padded = attention_mask is not None and bool((~valid[:, :-1] & valid[:, 1:]).any())
    if position_ids is None and not left_padded:
        return Layout(valid=valid, positions=positions, segment=segment, chunk=index // chunk_size,
                      offset=index % chunk_size, attention_mask=None)
    idx = torch.arange(length, device=device)
    causal = idx[None, :, None] >= idx[None, None, :]
    same_example = segment[:, :, None] == segment[:, None, :]
    mask = causal & same_example & valid[:, None, :]
    mask = mask | torch.eye(length, dtype=torch.bool, device=device)[None]  # a padding query attends to itself
    return Layout(valid=valid, positions=positions, segment=segment, chunk=index // chunk_size,
                  offset=index % chunk_size, attention_mask=mask[:, None])


class CognateCache(DynamicCache):
    """The generation cache (see the module docstring for why it is exact): keys and values of every attention
    layer a token passes (plain layers, then each ACT step's transition blocks, numbered by `attention_index`),
    which keys are real tokens, how many real tokens each row has seen, and the long-term memory's per-row
    state. One example per row (generation's layout): packed rows (position_ids) are not cached."""

    def __init__(self) -> None:
        super().__init__()
        self.key_valid: torch.Tensor | None = None  # (B, past) bool: real tokens (not left padding)
        self.real_tokens: torch.Tensor | None = None  # (B,) real tokens seen
        self.memory: torch.Tensor | None = None  # (B, slots, d): what the row's current chunk reads
        self.chunk_sum: torch.Tensor | None = None  # (B, d): the current chunk's tokens so far, summed
        self.chunk_count: torch.Tensor | None = None  # (B,)
        self.chunk_index: torch.Tensor | None = None  # (B,) the current chunk

    def _extra(self) -> tuple[str, ...]:
        return ("key_valid", "real_tokens", "memory", "chunk_sum", "chunk_count", "chunk_index")

    def _map_rows(self, fn: Any) -> None:
        for name in self._extra():
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, fn(value))

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        super().reorder_cache(beam_idx)
        self._map_rows(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_repeat_interleave(self, repeats: int) -> None:
        super().batch_repeat_interleave(repeats)
        self._map_rows(lambda t: t.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        super().batch_select_indices(indices)
        self._map_rows(lambda t: t[indices])

    @property
    def is_croppable(self) -> bool:
        return False  # a memory write cannot be undone

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("a Cognate cache cannot be cropped: its memory writes cannot be undone")


def cached_layout(cache: CognateCache, batch: int, new: int, device: torch.device, chunk_size: int,
                  attention_mask: torch.Tensor | None) -> Layout:
    """The Layout of `new` tokens appended to what `cache` has seen, as token_layout gives them in a pass over
    the whole (left-padded) sequence; records the new tokens in the cache."""
    new_valid = (attention_mask[:, -new:].bool().to(device) if attention_mask is not None
                 else torch.ones(batch, new, dtype=torch.bool, device=device))
    if cache.key_valid is None:
        cache.key_valid = torch.zeros(batch, 0, dtype=torch.bool, device=device)
        cache.real_tokens = torch.zeros(batch, dtype=torch.long, device=device)
    past = cache.key_valid.shape[1]
    counted = cache.real_tokens[:, None] + new_valid.long().cumsum(-1)
    index = counted - new_valid.long()  # real tokens before each new token
    key_valid = torch.cat((cache.key_valid, new_valid), dim=1)
    query_at = past + torch.arange(new, device=device)
    key_at = torch.arange(past + new, device=device)
    mask = (key_at[None, None, :] <= query_at[None, :, None]) & key_valid[:, None, :]
    mask = mask | (key_at[None, None, :] == query_at[None, :, None])  # a padding query attends to itself
    cache.key_valid, cache.real_tokens = key_valid, counted[:, -1]
    return Layout(valid=new_valid, positions=(counted - 1).clamp(min=0),
                  segment=torch.zeros(batch, new, dtype=torch.long, device=device), chunk=index // chunk_size,
                  offset=index % chunk_size, attention_mask=mask[:, None])


# ---------------------------------------------------------------- blocks


class RotaryEmbedding(nn.Module):
    """cos/sin of the rotary angles. The frequencies are computed per call, not kept in a buffer: a buffer
    outside the checkpoint is created on the meta device by from_pretrained and would come back wrong."""

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        self.head_dim = head_dim
        self.theta = theta

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        exponents = torch.arange(0, self.head_dim, 2, device=positions.device, dtype=torch.float32) / self.head_dim
        freqs = positions[..., None].float() / self.theta ** exponents
        angles = torch.cat((freqs, freqs), dim=-1)[:, None]  # (B, 1, L, head_dim): broadcast over heads
        return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-second, first), dim=-1) * sin


class CognateAttention(nn.Module):
    def __init__(self, config: CognateConfig):
        super().__init__()
        self.n_heads = config.n_heads
        self.dropout = config.dropout
        # q_proj/v_proj: the names method.target_modules=q_proj,v_proj picks, as on Qwen and Llama
        self.q_proj = nn.Linear(config.d_model, config.d_model)
        self.k_proj = nn.Linear(config.d_model, config.d_model)
        self.v_proj = nn.Linear(config.d_model, config.d_model)
        self.o_proj = nn.Linear(config.d_model, config.d_model)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor | None,
                cache: CognateCache | None = None, cache_index: int = 0) -> torch.Tensor:
        batch, length, width = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, self.n_heads, -1).transpose(1, 2)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        q, k = rotate(q, *rope), rotate(k, *rope)
        if cache is not None:  # the keys and values of the tokens before, at this same layer (and ACT step)
            k, v = cache.update(k, v, cache_index)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, width))


class CognateMLP(nn.Module):
    def __init__(self, config: CognateConfig):
        super().__init__()
        self.up_proj = nn.Linear(config.d_model, config.d_ff)
        self.down_proj = nn.Linear(config.d_ff, config.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.up_proj(x), approximate="tanh"))


class CognateBlock(GradientCheckpointingLayer):
    def __init__(self, config: CognateConfig):
        super().__init__()
        self.input_norm = nn.LayerNorm(config.d_model, eps=config.norm_eps)
        self.attn = CognateAttention(config)
        self.mlp_norm = nn.LayerNorm(config.d_model, eps=config.norm_eps)
        self.mlp = CognateMLP(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor | None,
                cache: CognateCache | None = None, cache_index: int = 0) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.input_norm(x), rope, mask, cache, cache_index))
        return x + self.dropout(self.mlp(self.mlp_norm(x)))


# ---------------------------------------------------------------- long-term memory


@dataclass
class MemoryStats:
    write_gate: torch.Tensor  # (groups,) the gate of every chunk's write
    read_entropy: torch.Tensor  # scalar: mean normalised entropy of the read attention over real tokens
    read_norm: torch.Tensor  # scalar: mean L2 norm of what a real token adds from the memory
    versions: torch.Tensor  # (groups, slots, d): the memory each chunk's tokens read


class LongTermMemory(nn.Module):
    def __init__(self, config: CognateConfig):
        super().__init__()
        d = config.d_model
        self.n_heads = config.n_heads
        self.slots = config.memory_slots
        self.chunk = config.memory_chunk
        self.memory = nn.Parameter(torch.empty(config.memory_slots, d))  # the state every example starts from
        self.read_norm = nn.LayerNorm(d, eps=config.norm_eps)
        self.read_query = nn.Linear(d, d)
        self.read_key = nn.Linear(d, d)
        self.read_value = nn.Linear(d, d)
        self.read_out = nn.Linear(d, d)
        self.write_norm = nn.LayerNorm(d, eps=config.norm_eps)
        self.write_content = nn.Linear(d, d)
        self.write_address = nn.Linear(d, d)
        self.write_gate = nn.Linear(d, 1)

    def write(self, memory: torch.Tensor, summary: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """memory (n, slots, d) after a chunk whose mean state is `summary` (n, d): (new memory, gate (n,))."""
        summary = self.write_norm(summary)
        scores = torch.einsum("nsd,nd->ns", memory, self.write_address(summary)) / math.sqrt(memory.shape[-1])
        gate = torch.sigmoid(self.write_gate(summary)).squeeze(-1)
        strength = (gate[:, None] * scores.softmax(dim=-1))[..., None]  # in (0, 1): how much each slot is replaced
        return (1 - strength) * memory + strength * self.write_content(summary)[:, None, :], gate

    def read(self, x: torch.Tensor, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens x (n, c, d) attend over memory (n, slots, d): (read (n, c, d), attention (n, heads, c, slots))."""
        n, c, d = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(n, t.shape[1], self.n_heads, -1).transpose(1, 2)

        q = heads(self.read_query(self.read_norm(x)))
        k, v = heads(self.read_key(memory)), heads(self.read_value(memory))
        attention = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).softmax(dim=-1)
        out = (attention @ v).transpose(1, 2).reshape(n, c, d)
        return self.read_out(out), attention

    def forward(self, x: torch.Tensor, layout: Layout,
                cache: CognateCache | None = None) -> tuple[torch.Tensor, MemoryStats]:
        if cache is not None:
            return self.forward_cached(x, layout, cache)
        batch, length, d = x.shape
        valid = layout.valid.reshape(-1)
        # one group per (row, example, chunk) that has real tokens; sorted, so an example's chunks are in order
        n_chunks = int(layout.chunk.max()) + 1
        n_examples = int(layout.segment.max()) + 1
        rows = torch.arange(batch, device=x.device)[:, None].expand(batch, length)
        lane_key = (rows * n_examples + layout.segment).reshape(-1)[valid]
        group_key = lane_key * n_chunks + layout.chunk.reshape(-1)[valid]
        groups, group_of = torch.unique(group_key, return_inverse=True)
        lanes, lane_of_group = torch.unique(groups // n_chunks, return_inverse=True)
        chunk_of_group = groups % n_chunks
        n_groups = groups.shape[0]
        if n_groups == 0:  # nothing but padding: nothing to write or read
            empty = x.new_zeros(0)
            return x, MemoryStats(empty, x.new_zeros(()), x.new_zeros(()), x.new_zeros(0, self.slots, d))

        tokens = x.reshape(-1, d)[valid]
        sums = torch.zeros(n_groups, d, dtype=x.dtype, device=x.device).index_add(0, group_of, tokens)
        counts = torch.zeros(n_groups, dtype=x.dtype, device=x.device).index_add(
            0, group_of, torch.ones_like(group_of, dtype=x.dtype))
        summaries = sums / counts[:, None]

        # the memory each group reads: its example's memory after the writes of the example's earlier chunks
        state = self.memory.to(x.dtype)[None].expand(lanes.shape[0], -1, -1)
        parts, order, gates = [], [], []
        for k in range(n_chunks):
            members = (chunk_of_group == k).nonzero().squeeze(-1)
            if members.numel() == 0:
                continue
            lane = lane_of_group[members]
            current = state[lane]
            parts.append(current)
            order.append(members)
            written, gate = self.write(current, summaries[members])
            gates.append(gate)
            state = state.index_copy(0, lane, written)
        order_all = torch.cat(order)
        versions = torch.cat(parts)[torch.argsort(order_all)]
        write_gate = torch.cat(gates)[torch.argsort(order_all)]

        # tokens laid out per group (group, chunk offset), read, and put back in place; padding reads nothing
        slot = group_of * self.chunk + layout.offset.reshape(-1)[valid]
        grouped = torch.zeros(n_groups * self.chunk, d, dtype=x.dtype, device=x.device).index_copy(0, slot, tokens)
        read, attention = self.read(grouped.view(n_groups, self.chunk, d), versions)
        per_token = read.reshape(-1, d)[slot]
        out = torch.zeros(batch * length, d, dtype=x.dtype, device=x.device)
        out = out.index_copy(0, valid.nonzero().squeeze(-1), per_token)
        entropy = -(attention * attention.clamp_min(1e-12).log()).sum(-1).mean(1)  # (groups, chunk): over heads
        read_entropy = entropy.reshape(-1)[slot].mean() / math.log(self.slots) if self.slots > 1 else x.new_zeros(())
        read_norm = per_token.detach().float().norm(dim=-1).mean()
        return x + out.view(batch, length, d), MemoryStats(write_gate, read_entropy.detach(), read_norm, versions)


    def forward_cached(self, x: torch.Tensor, layout: Layout, cache: CognateCache) -> tuple[torch.Tensor, MemoryStats]:
        """New tokens x (B, n, d) against each row's memory state in `cache`, which it then advances. A row's
        pending chunk is written when its next chunk's first token arrives, before that token reads: the same
        memory versions as forward(), which writes every chunk and lets later chunks read the result."""
        batch, _, d = x.shape
        if cache.memory is None:
            cache.memory = self.memory.to(x.dtype)[None].expand(batch, -1, -1)
            cache.chunk_sum = x.new_zeros(batch, d)
            cache.chunk_count = x.new_zeros(batch)
            cache.chunk_index = torch.zeros(batch, dtype=torch.long, device=x.device)
        memory, total, count = cache.memory, cache.chunk_sum, cache.chunk_count
        # 0: the row's current chunk, k: the k-th chunk after it (chunks advance by one per memory_chunk tokens)
        ahead = torch.where(layout.valid, layout.chunk - cache.chunk_index[:, None], -1)
        out, gates, entropy = torch.zeros_like(x), [], x.new_zeros(layout.valid.shape)
        for k in range(int(ahead.max()) + 1):
            members = ahead == k
            rows = members.any(dim=1)
            if not bool(rows.any()):
                continue
            if k > 0:  # these rows' previous chunk is complete: its write comes before their next chunk reads
                written, gate = self.write(memory, total / count.clamp_min(1)[:, None])
                memory = torch.where(rows[:, None, None], written, memory)
                gates.append(gate[rows])
                total = torch.where(rows[:, None], torch.zeros_like(total), total)
                count = torch.where(rows, torch.zeros_like(count), count)
            read, attention = self.read(x, memory)
            out = torch.where(members[..., None], read, out)
            token_entropy = -(attention * attention.clamp_min(1e-12).log()).sum(-1).mean(1)
            entropy = torch.where(members, token_entropy, entropy)
            total = total + torch.where(members[..., None], x, torch.zeros_like(x)).sum(dim=1)
            count = count + members.to(x.dtype).sum(dim=1)
        last_chunk = torch.where(layout.valid, layout.chunk, -1).max(dim=1).values
        cache.chunk_index = torch.where(last_chunk >= 0, last_chunk, cache.chunk_index)
        cache.memory, cache.chunk_sum, cache.chunk_count = memory, total, count
        real = layout.valid
        read_entropy = (entropy[real].mean() / math.log(self.slots) if self.slots > 1 and bool(real.any())
                        else x.new_zeros(()))
        read_norm = out[real].detach().float().norm(dim=-1).mean() if bool(real.any()) else x.new_zeros(())
        write_gate = torch.cat(gates) if gates else x.new_zeros(0)
        return x + out, MemoryStats(write_gate, read_entropy.detach(), read_norm, memory)


# ---------------------------------------------------------------- adaptive computation time


@dataclass
class PonderResult:
    output: torch.Tensor  # (B, L, d): each token's states mixed by its halting weights
    cost: torch.Tensor  # (B, L): N + R
    steps: torch.Tensor  # (B, L): N
    weights: torch.Tensor  # (B, L, max_ponder_steps)


class AdaptiveComputation(nn.Module):
    def __init__(self, config: CognateConfig):
        super().__init__()
        self.max_steps = config.max_ponder_steps
        self.threshold = config.act_threshold
        self.blocks = nn.ModuleList(CognateBlock(config) for _ in range(config.act_layers))
        self.step_embed = nn.Parameter(torch.empty(config.max_ponder_steps, config.d_model))  # "which step"
        self.halt_norm = nn.LayerNorm(config.d_model, eps=config.norm_eps)
        self.halt = nn.Linear(config.d_model, 1)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], layout: Layout,
                cache: CognateCache | None = None, cache_start: int = 0) -> PonderResult:
        """With a cache, every step runs whatever the halting: a later token may ponder longer and attend to
        this token's state at that step (its weight here is 0 after halting, as in the whole-sequence pass)."""
        batch, length, _ = x.shape
        # the bookkeeping stays in fp32 whatever the weights: a threshold of 0.99 is below bf16's resolution
        zeros = torch.zeros(batch, length, dtype=torch.float32, device=x.device)
        cumulative, remainder, steps, output = zeros, zeros, zeros, torch.zeros_like(x)
        running = layout.valid.clone()  # padding halts at once: it costs nothing and weighs nothing
        weights = []
        for step in range(self.max_steps):
            x = x + self.step_embed[step].to(x.dtype)
            for j, block in enumerate(self.blocks):
                x = block(x, rope, layout.attention_mask, cache, cache_start + step * len(self.blocks) + j)
            p = torch.sigmoid(self.halt(self.halt_norm(x)).float()).squeeze(-1)
            last = step == self.max_steps - 1
            halting = running if last else running & (cumulative + p >= self.threshold)
            continuing = running & ~halting
            left = 1 - cumulative  # R: what the earlier steps did not claim
            weight = torch.where(continuing, p, torch.where(halting, left, zeros))
            if step == 0:  # padding: weight 1 on the first state, so its output stays finite
                weight = torch.where(layout.valid, weight, torch.ones_like(weight))
            output = output + weight.to(x.dtype)[..., None] * x
            remainder = remainder + torch.where(halting, left, zeros)
            cumulative = cumulative + torch.where(continuing, p, zeros)
            steps = steps + running.float()
            weights.append(weight)
            running = continuing
            if cache is None and not bool(running.any()):  # every token halted: later steps would weigh nothing
                break
        stacked = torch.stack(weights, dim=-1)
        stacked = F.pad(stacked, (0, self.max_steps - stacked.shape[-1]))
        return PonderResult(output=output, cost=steps + remainder, steps=steps, weights=stacked)


# ---------------------------------------------------------------- the model


class CognatePreTrainedModel(PreTrainedModel):
    config: CognateConfig
    config_class = CognateConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["CognateBlock"]
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, LongTermMemory):
            init.normal_(module.memory, mean=0.0, std=std)
        elif isinstance(module, AdaptiveComputation):
            init.normal_(module.step_embed, mean=0.0, std=std)
            init.constant_(module.halt.bias, self.config.halt_bias_init)


class CognateModel(CognatePreTrainedModel):
    def __init__(self, config: CognateConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model)
        self.rotary = RotaryEmbedding(config.d_model // config.n_heads, config.rope_theta)
        self.layers = nn.ModuleList(CognateBlock(config) for _ in range(config.n_layers))
        self.memory = LongTermMemory(config)
        self.act = AdaptiveComputation(config)
        self.norm = nn.LayerNorm(config.d_model, eps=config.norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embed_tokens = value

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None,
                past_key_values: CognateCache | None = None,
                **kwargs: Any) -> tuple[torch.Tensor, PonderResult, MemoryStats, Layout]:
        """With `past_key_values`, the tokens given follow those the cache has seen (attention_mask: the whole
        sequence's or the new tokens' own)."""
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        cache = past_key_values
        if cache is None:
            layout = token_layout(x.shape[:2], x.device, self.config.memory_chunk, attention_mask, position_ids)
        else:
            layout = cached_layout(cache, x.shape[0], x.shape[1], x.device, self.config.memory_chunk, attention_mask)
            if position_ids is not None:
                # generate() passes the positions it counts from the mask (rotary angles, as the uncached pass
                # uses them); a packed row restarts them at a later token, which one example per row cannot follow
                given = position_ids[:, -x.shape[1]:].to(x.device).long()
                index = layout.chunk * self.config.memory_chunk + layout.offset
                if bool((layout.valid & (given == 0) & (index > 0)).any()):
                    raise ValueError("the Cognate cache holds one example per row: position_ids of packed rows "
                                     "need use_cache=False")
                layout.positions = given
        rope = self.rotary(layout.positions, x.dtype)
        for i, layer in enumerate(self.layers):
            x = layer(x, rope, layout.attention_mask, cache, i)
        x, memory = self.memory(x, layout, cache)
        ponder = self.act(x, rope, layout, cache, len(self.layers))
        return self.norm(ponder.output), ponder, memory, layout


class CognateForCausalLM(CognatePreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: CognateConfig):
        super().__init__(config)
        self.model = CognateModel(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()
        self.generation_config.use_cache = True  # generate() keeps a CognateCache (exact: see the module docstring)
        built = sum(p.numel() for name, p in self.named_parameters() if name != "lm_head.weight")
        built += 0 if config.tie_word_embeddings else self.lm_head.weight.numel()
        if built != config.parameter_count():  # the formula the budget check relies on must describe this code
            raise RuntimeError(f"cognate built {built:,} parameters where its config counts "
                               f"{config.parameter_count():,}")

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # generate() must not build a DynamicCache: forward() builds a CognateCache when use_cache

    def get_input_embeddings(self) -> nn.Module:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm_head = value

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None, use_cache: bool | None = None,
                past_key_values: CognateCache | None = None, logits_to_keep: int = 0,
                num_items_in_batch: Any = None, **kwargs: Any) -> CognateCausalLMOutput:
        """use_cache=True (what generate() passes) starts a CognateCache when `past_key_values` is None; left
        at None, no cache is built (training). logits_to_keep > 0: logits of the last positions only."""
        if past_key_values is None and use_cache:
            past_key_values = CognateCache()
        hidden, ponder, memory, layout = self.model(input_ids=input_ids, attention_mask=attention_mask,
                                                    position_ids=position_ids, inputs_embeds=inputs_embeds,
                                                    past_key_values=past_key_values)
        kept = hidden[:, -logits_to_keep:] if logits_to_keep and labels is None else hidden
        logits = self.lm_head(kept)
        real = layout.valid.to(ponder.cost.dtype)
        n_real = real.sum().clamp_min(1)
        ponder_cost = (ponder.cost * real).sum() / n_real
        lm_loss = loss = None
        if labels is not None:  # next-token loss, Hugging Face style: labels are the inputs, -100 ignored
            targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX).to(logits.device)
            losses = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                     ignore_index=IGNORE_INDEX, reduction="sum")
            count = num_items_in_batch if num_items_in_batch is not None else (targets != IGNORE_INDEX).sum()
            lm_loss = losses / torch.as_tensor(count, device=losses.device).clamp_min(1)
            loss = lm_loss + self.config.ponder_weight * ponder_cost
        return CognateCausalLMOutput(
            loss=loss, logits=logits, lm_loss=lm_loss, ponder_cost=ponder_cost,
            ponder_steps=((ponder.steps * real).sum() / n_real).detach(), token_ponder_steps=ponder.steps.detach(),
            halting_weights=ponder.weights,
            memory_write_gate=memory.write_gate.mean().detach() if memory.write_gate.numel() else None,
            memory_read_entropy=memory.read_entropy, memory_read_norm=memory.read_norm,
            past_key_values=past_key_values,
        )


def register() -> None:
    """Make model_type "cognate" known to AutoConfig and AutoModelForCausalLM (idempotent)."""
    AutoConfig.register("cognate", CognateConfig, exist_ok=True)
    AutoModelForCausalLM.register(CognateConfig, CognateForCausalLM, exist_ok=True)


register()
