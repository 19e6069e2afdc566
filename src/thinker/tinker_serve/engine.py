"""The training engine: served base models, LoRA adapters, Tinker's losses and AdamW, on transformers + peft.

Loss parity with backend=local and with a client-side twin matters, so the recipe is fixed and public:
- a base model loads the way backend=local loads it (`load_base_model`);
- LoRA is peft's LoraConfig(r=rank, lora_alpha=32, lora_dropout=0) on the modules `lora_target_modules`
  picks, and `apply_lora` seeds torch with the LoraConfig seed (0 when None) immediately before
  get_peft_model, so the adapter's initial weights depend on that seed only;
- models run in eval mode (no dropout), in fp32 on CPU unless told otherwise;
- the log-probability of datum i's target token t is read at position t of a forward pass over the datum's
  tokens as one sequence; a request's datums are batched with right padding and an attention mask, which
  gives the same numbers as one datum at a time (up to float rounding);
- cross_entropy: loss = sum_t -logprob_t * weight_t; the policy-gradient losses (importance_sampling, ppo,
  cispo, dro, gspo, stable_reinforce) are thinker.models.rl_losses, shared with backend=local; the gradient
  of the summed loss accumulates over forward_backward calls until optim_step (AdamW, then zero).
"""

from __future__ import annotations

import copy
import logging
import threading
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from thinker.models import rl_losses
from thinker.tinker_serve import fields
from thinker.tinker_serve.errors import UserError
from thinker.tinker_serve.wire import Datum, FwdBwdOutput

log = logging.getLogger("thinker")

LORA_ALPHA = 32  # Tinker's LoRA scaling is fixed; its API has no alpha
BUILD_SEED = 42  # the project's default `seed`: the builtin models are built with it
MODULE_GROUPS = {
    "train_attn": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "train_mlp": ("gate_proj", "up_proj", "down_proj"),
    "train_unembed": ("lm_head",),
}
SUPPORTED_LOSSES = ("cross_entropy", *rl_losses.LOSSES)  # every built-in loss of the tinker 0.38 SDK
TOKENS_PER_MICROBATCH = 8192  # padded tokens per forward pass: bounds the logits' memory
MAX_LORA_RANK = 256  # and at most the base model's hidden size (LoraSpec.check_fits)

# torch.manual_seed + get_peft_model must not interleave between threads (training and sampling both build)
_INIT_LOCK = threading.Lock()


@dataclass(frozen=True)
class LoraSpec:
    rank: int
    seed: int | None = None
    train_unembed: bool = True
    train_mlp: bool = True
    train_attn: bool = True

    @classmethod
    def from_request(cls, cfg: dict[str, Any] | None) -> LoraSpec:
        cfg = cfg or {}
        if not isinstance(cfg, dict):
            raise UserError("lora_config must be an object (LoraConfig)")
        where = "lora_config."
        spec = cls(rank=fields.integer(cfg, "rank", 32, low=1, high=MAX_LORA_RANK, where=where),
                   seed=fields.seed(cfg, where=where),
                   **{flag: fields.boolean(cfg, flag, True, where=where) for flag in MODULE_GROUPS})
        if not (spec.train_attn or spec.train_mlp or spec.train_unembed):
            raise UserError("at least one of train_attn, train_mlp and train_unembed must be true")
        return spec

    def check_fits(self, base: BaseModel) -> None:
        """A rank above the model's width adds parameters and no capacity (and a huge one fills the memory)."""
        if self.rank > base.hidden_size:
            raise UserError(f"lora_config.rank {self.rank} is more than {base.name}'s hidden size "
                            f"{base.hidden_size}: use a rank from 1 to {base.hidden_size}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BaseModel:
    """A served base model: the pristine weights (never trained), its tokenizer and facts about it."""

    name: str
    path: str
    model: Any
    tokenizer: Any
    device: torch.device
    dtype: str
    max_context_length: int
    arch: str
    eos_ids: tuple[int, ...]
    vocab_size: int
    hidden_size: int


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda but no CUDA device is visible")
    return torch.device(device)


def default_dtype(device: torch.device) -> str:
    return "bf16" if device.type == "cuda" else "fp32"


def load_base_model(name: str, model_cfg: Any, device: torch.device, dtype: str) -> BaseModel:
    """Load a model option the way backend=local does (building a builtin model on first use)."""
    from thinker.models.adapter_weights import training_start_point
    from thinker.models.loading import load_causal_lm, load_tokenizer, resolve_model_path
    from thinker.paths import resolve_input

    corpus = [resolve_input(p) for p in (model_cfg.get("tokenizer_corpus") or [])]
    path = training_start_point(resolve_model_path(model_cfg, BUILD_SEED, corpus))
    revision = model_cfg.get("revision")
    tokenizer = load_tokenizer(path, revision)
    model = load_causal_lm(path, method="lora", quant=None, dtype=dtype, revision=revision)
    model.to(device)
    model.eval()
    model.requires_grad_(False)
    config = model.config
    eos: set[int] = set()
    for source in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(source, int):
            eos.add(source)
        elif isinstance(source, (list, tuple)):
            eos.update(int(t) for t in source)
    return BaseModel(
        name=name, path=str(path), model=model, tokenizer=tokenizer, device=device, dtype=dtype,
        max_context_length=int(getattr(config, "max_position_embeddings", 0) or 2048),
        arch=(config.architectures or [type(model).__name__])[0], eos_ids=tuple(sorted(eos)),
        vocab_size=int(model.get_output_embeddings().weight.shape[0]),
        hidden_size=int(model.get_input_embeddings().weight.shape[1]),
    )


def lora_target_modules(model: Any, spec: LoraSpec) -> list[str]:
    """The peft target_modules for the groups `spec` trains, checked against the model's linear layers."""
    linear = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    targets: list[str] = []
    for flag, names in MODULE_GROUPS.items():
        if not getattr(spec, flag):
            continue
        missing = [n for n in names if n not in linear]
        if missing:
            arch = (getattr(model.config, "architectures", None) or [type(model).__name__])[0]
            raise UserError(
                f"{flag}=True needs linear layers named {', '.join(names)}, and {arch} has no "
                f"{', '.join(missing)}: thinker tinker-serve supports Qwen2/Llama-style module names; "
                f"set {flag}=False or serve a Qwen2/Llama-family model")
        targets.extend(names)
    return targets


def apply_lora(model: Any, spec: LoraSpec) -> Any:
    """peft LoRA per `spec`; the initial adapter depends only on spec.seed (0 when None)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=spec.rank, lora_alpha=LORA_ALPHA, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                        target_modules=lora_target_modules(model, spec))
    with _INIT_LOCK, warnings.catch_warnings():
        # LoRA on lm_head of a tied-embedding model adapts the output layer only (Tinker's train_unembed)
        warnings.filterwarnings("ignore", message=".*tie_word_embeddings.*", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        torch.manual_seed(0 if spec.seed is None else spec.seed)
        peft_model = get_peft_model(model, config)
    peft_model.eval()
    return peft_model


def adapter_model(base: BaseModel, spec: LoraSpec) -> Any:
    # each adapter gets its own copy of the base: simple, and fine for the small models this server is for
    return apply_lora(copy.deepcopy(base.model), spec)


def adapter_state(model: Any) -> dict[str, torch.Tensor]:
    """The adapter's tensors under peft's saved names (`...lora_A.weight`), on the CPU."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(model, save_embedding_layers=False)
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


def load_adapter_state(model: Any, state: dict[str, torch.Tensor]) -> None:
    from peft import set_peft_model_state_dict

    own = adapter_state(model)
    if set(own) != set(state) or any(own[k].shape != state[k].shape for k in own):
        raise UserError("the checkpoint's adapter does not match this model's LoRA configuration "
                        "(rank or trained layers differ)")
    set_peft_model_state_dict(model, state)


def _check_tokens(tokens: list[int], base: BaseModel, where: str) -> None:
    if not tokens:
        raise UserError(f"{where} is empty")
    if len(tokens) > base.max_context_length:
        raise UserError(f"{where} has {len(tokens)} tokens, more than {base.name}'s context of "
                        f"{base.max_context_length}")
    low, high = min(tokens), max(tokens)
    if low < 0 or high >= base.vocab_size:
        raise UserError(f"{where} has token id {low if low < 0 else high}, outside {base.name}'s vocabulary "
                        f"(0..{base.vocab_size - 1})")


def _vector(datum: Datum, key: str, n: int, i: int, *, default: float | None = None) -> np.ndarray:
    value = datum.inputs.get(key)
    if value is None:
        if default is None:
            raise UserError(f"data[{i}].loss_fn_inputs needs {key!r}")
        return np.full(n, default, dtype=np.float32)
    value = np.asarray(value)
    if value.ndim != 1 or value.shape[0] != n:
        raise UserError(f"data[{i}].loss_fn_inputs[{key!r}] must have shape [{n}] (one value per input "
                        f"token), got {list(value.shape)}")
    return value


def loss_config(loss_fn: str, config: dict[str, Any] | None) -> dict[str, float]:
    """The request's loss_fn_config checked against its loss, defaults filled in (cross_entropy takes none)."""
    if loss_fn not in SUPPORTED_LOSSES:
        raise UserError(f"loss_fn {loss_fn!r} is not supported by thinker tinker-serve (supported: "
                        f"{', '.join(SUPPORTED_LOSSES)}); forward_backward_custom runs any loss on top of them")
    if loss_fn == "cross_entropy":
        return {}
    try:
        return rl_losses.check_config(loss_fn, config)
    except rl_losses.LossConfigError as exc:
        raise UserError(f"{exc}: fix the loss_fn_config of forward_backward") from None


def check_datums(data: list[Datum], base: BaseModel, loss_fn: str, config: dict[str, Any] | None = None) -> None:
    if not data:
        raise UserError("no data: forward_backward needs at least one datum")
    loss_config(loss_fn, config)
    for i, d in enumerate(data):
        _check_tokens(d.tokens, base, f"data[{i}].model_input")
        target = d.inputs.get("target_tokens")
        if target is not None and np.asarray(target).ndim != 1:
            raise UserError(f"data[{i}].loss_fn_inputs['target_tokens'] is {np.asarray(target).ndim}-D: only "
                            "1-D targets (one token per position) are supported by thinker tinker-serve")
        targets = _vector(d, "target_tokens", len(d.tokens), i).astype(np.int64)
        _check_tokens(targets.tolist(), base, f"data[{i}].loss_fn_inputs['target_tokens']")
        if (d.input_spans is None) != (d.target_spans is None):
            raise UserError(f"data[{i}] has provenance for one field only: set both span lists or neither "
                            "(Datum.with_provenance)")
        if loss_fn == "cross_entropy":
            _vector(d, "weights", len(d.tokens), i, default=1.0)
            continue
        if loss_fn != "stable_reinforce":  # stable_reinforce takes q from the sampler's record instead
            _vector(d, "logprobs", len(d.tokens), i)
        _vector(d, "advantages", len(d.tokens), i)
        for key in rl_losses.LOSSES[loss_fn].optional_inputs:
            if key in d.inputs:
                _vector(d, key, len(d.tokens), i)


def _microbatches(data: list[Datum]) -> list[list[int]]:
    """Consecutive datum indices per forward pass, at most TOKENS_PER_MICROBATCH padded tokens each."""
    groups: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i, d in enumerate(data):
        n = len(d.tokens)
        if current and max(longest, n) * (len(current) + 1) > TOKENS_PER_MICROBATCH:
            groups.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, n)
    if current:
        groups.append(current)
    return groups


def target_logprobs(model: Any, data: list[Datum], device: torch.device) -> list[torch.Tensor]:
    """log p(target_tokens[t] | tokens[:t+1]) per datum, one right-padded forward pass for all of them."""
    lengths = [len(d.tokens) for d in data]
    width = max(lengths)
    ids = torch.zeros((len(data), width), dtype=torch.long)
    targets = torch.zeros((len(data), width), dtype=torch.long)
    mask = torch.zeros((len(data), width), dtype=torch.long)
    for row, d in enumerate(data):
        n = lengths[row]
        ids[row, :n] = torch.tensor(d.tokens, dtype=torch.long)
        targets[row, :n] = torch.from_numpy(np.asarray(d.inputs["target_tokens"], dtype=np.int64))
        mask[row, :n] = 1
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits.float()
    logprobs = -torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.to(device).reshape(-1), reduction="none",
    ).view(len(data), width)
    return [logprobs[row, :n] for row, n in enumerate(lengths)]


def elementwise_loss(loss_fn: str, logprobs: torch.Tensor, datum: Datum, config: dict[str, Any],
                     i: int) -> torch.Tensor:
    n = logprobs.shape[0]

    def vec(key: str, default: float | None = None) -> torch.Tensor:
        value = _vector(datum, key, n, i, default=default)
        return torch.as_tensor(value, dtype=torch.float32, device=logprobs.device)

    if loss_fn == "cross_entropy":
        return -logprobs * vec("weights", 1.0)
    inputs = {key: vec(key) for key in ("advantages", *rl_losses.LOSSES[loss_fn].optional_inputs)
              if key in datum.inputs}
    if loss_fn == "stable_reinforce":  # q and the sampled mask come from the sampler's record (stability.py)
        assert datum.stability is not None, "stable_reinforce datums are resolved before they run"
        inputs |= {k: torch.as_tensor(v, dtype=torch.float32, device=logprobs.device)
                   for k, v in datum.stability.items()}
    else:
        inputs["logprobs"] = vec("logprobs")
    return rl_losses.elementwise(loss_fn, logprobs, inputs, config)


@dataclass
class AdamParams:
    learning_rate: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-12
    weight_decay: float = 0.0
    grad_clip_norm: float = 0.0

    @classmethod
    def from_request(cls, body: dict[str, Any]) -> AdamParams:
        """Finite numbers in sane ranges only: a NaN or infinite learning rate, beta or eps poisons the weights."""
        raw = next((body[k] for k in ("adam_params", "optim_params", "optimizer_params") if body.get(k) is not None), None)
        if not isinstance(raw, dict):
            raise UserError("optim_step needs adam_params (AdamParams)")
        kind = raw.get("type", "adamw")
        if kind not in ("adamw", "adam"):
            raise UserError(f"optimizer {kind!r} is not supported by thinker tinker-serve: use AdamParams")
        where = "adam_params."
        return cls(learning_rate=fields.number(raw, "learning_rate", cls.learning_rate, low=0, high=10, where=where),
                   beta1=fields.number(raw, "beta1", cls.beta1, low=0, high=1, high_open=True, where=where),
                   beta2=fields.number(raw, "beta2", cls.beta2, low=0, high=1, high_open=True, where=where),
                   eps=fields.number(raw, "eps", cls.eps, low=0, high=1, low_open=True, where=where),
                   weight_decay=fields.number(raw, "weight_decay", cls.weight_decay, low=0, high=10, where=where),
                   grad_clip_norm=fields.number(raw, "grad_clip_norm", cls.grad_clip_norm, low=0, where=where))


class TrainingModel:
    """One training run: a LoRA model on its own copy of the base, its AdamW state and accumulated grads.

    Used from its model's worker thread only (requests run one at a time, in seq-id order).
    """

    def __init__(self, model_id: str, base: BaseModel, spec: LoraSpec):
        self.model_id = model_id
        self.base = base
        self.spec = spec
        self.model = adapter_model(base, spec)
        self.params = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        self.optimizer = self._new_optimizer()
        self.steps = 0

    def _new_optimizer(self) -> torch.optim.Optimizer:
        defaults = AdamParams()
        return torch.optim.AdamW([p for _, p in self.params], lr=defaults.learning_rate,
                                 betas=(defaults.beta1, defaults.beta2), eps=defaults.eps,
                                 weight_decay=defaults.weight_decay)

    # ---------------------------------------------------------- forward / backward

    def forward_backward(self, data: list[Datum], loss_fn: str, config: dict[str, Any], backward: bool) -> FwdBwdOutput:
        check_datums(data, self.base, loss_fn, config)
        config = loss_config(loss_fn, config)
        outputs: list[dict[str, np.ndarray]] = [{} for _ in data]
        total = 0.0
        with torch.set_grad_enabled(backward):
            for group in _microbatches(data):
                batch = [data[i] for i in group]
                losses = []
                for i, logprobs in zip(group, target_logprobs(self.model, batch, self.base.device), strict=True):
                    per_token = elementwise_loss(loss_fn, logprobs, data[i], config, i)
                    losses.append(per_token.sum())
                    outputs[i] = {"logprobs": logprobs.detach().float().cpu().numpy(),
                                  "elementwise_loss": per_token.detach().float().cpu().numpy()}
                loss = torch.stack(losses).sum()
                if backward:
                    loss.backward()
                total += float(loss.detach())
        return FwdBwdOutput(outputs=outputs, metrics={"loss:sum": total})

    # ---------------------------------------------------------- optimizer

    def grad_norm(self) -> float:
        grads = [p.grad.detach().float() for _, p in self.params if p.grad is not None]
        if not grads:
            return 0.0
        return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))

    def optim_step(self, params: AdamParams) -> dict[str, float]:
        for group in self.optimizer.param_groups:
            group.update(lr=params.learning_rate, betas=(params.beta1, params.beta2), eps=params.eps,
                         weight_decay=params.weight_decay)
        norm = self.grad_norm()
        if params.grad_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_([p for _, p in self.params], params.grad_clip_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.steps += 1
        return {"grad_norm:mean": norm, "learning_rate:mean": params.learning_rate}

    # ---------------------------------------------------------- state

    def adapter_state(self) -> dict[str, torch.Tensor]:
        return adapter_state(self.model)

    def load_adapter_state(self, state: dict[str, torch.Tensor]) -> None:
        load_adapter_state(self.model, state)
        self.optimizer.zero_grad(set_to_none=True)

    def optimizer_state(self) -> dict[str, torch.Tensor]:
        """AdamW's per-parameter state keyed `<parameter name>::<step|exp_avg|exp_avg_sq>`, on the CPU."""
        tensors: dict[str, torch.Tensor] = {}
        for name, param in self.params:
            for key, value in self.optimizer.state.get(param, {}).items():
                tensor = value if torch.is_tensor(value) else torch.tensor(float(value))
                tensors[f"{name}::{key}"] = tensor.detach().to("cpu", copy=True).contiguous()
        return tensors

    def load_optimizer_state(self, tensors: dict[str, torch.Tensor] | None) -> None:
        """Restore AdamW's state (None: a fresh optimizer, as for a weights-only load)."""
        self.optimizer = self._new_optimizer()
        if not tensors:
            return
        names = {name for name, _ in self.params}
        stored = {key.split("::", 1)[0] for key in tensors}
        if not stored <= names:
            raise UserError("the checkpoint's optimizer state does not match this model's LoRA parameters")
        for name, param in self.params:
            state = {key.split("::", 1)[1]: value for key, value in tensors.items() if key.split("::", 1)[0] == name}
            if not state:
                continue
            restored: dict[str, Any] = {}
            for key, value in state.items():
                # AdamW keeps `step` as a float32 tensor on the CPU (non-capturable); moments live with the param
                restored[key] = value.to(torch.float32) if key == "step" else value.to(param.device, param.dtype)
            self.optimizer.state[param] = restored
