"""Resolve `model.source` to a path or hub id, and load tokenizers and causal LMs from it.

Every causal LM loads through the adapter of its architecture (thinker.models.adapters): training,
evaluation, merging, tinker-serve and registry models alike, so a Cognate model and a Qwen model take the
same path. Weights load from safetensors only: pickle checkpoints (pytorch_model.bin) can run code when unpickled.
Hub and loader failures become one-line ThinkerErrors that say what to do; the HF_TOKEN value never appears
in them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from thinker.errors import ThinkerError

TOKEN_ENV = "HF_TOKEN"
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
QUANT_TYPES = ("nf4", "fp4")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


# ---------------------------------------------------------------- where the weights are


def resolve_model_path(model_cfg: Any, seed: int, corpus_files: list[Path]) -> str:
    """`builtin` -> its (built on demand) folder; an existing folder -> that path; otherwise a hub id."""
    source = str(model_cfg.source)
    if source == "builtin":
        from thinker.models.builtin import ensure_builtin

        return str(ensure_builtin(model_cfg, seed, corpus_files))
    if "://" in source:
        raise ThinkerError(
            f"model.source={source} is remote weights, which only the backend that made them can load",
            f"model={model_cfg.name}",
            "train on them with that backend (e.g. backend=tinker), or pick a model with local weights",
            stage="train",
        )
    folder = Path(source).expanduser()
    if folder.is_dir():
        return str(folder)
    if _looks_like_path(source):
        raise ThinkerError(
            f"model folder {source} does not exist",
            f"model.source={source}",
            "fix the path (a folder written by save_pretrained) or give a hub id such as Qwen/Qwen2.5-0.5B-Instruct",
            stage="train",
        )
    return source


def _looks_like_path(source: str) -> bool:
    # a hub id is `name` or `org/name`; anything else with slashes, or starting like a path, is a folder
    return source.startswith(("/", "./", "../", "~")) or source.count("/") > 1 or "\\" in source


def looks_like_hub_id(source: str) -> bool:
    """model.source names a hub repository: not builtin, not remote weights, not a folder here or a path."""
    return (source != "builtin" and "://" not in source and not Path(source).expanduser().is_dir()
            and not _looks_like_path(source))


def hub_token() -> str | None:
    return os.environ.get(TOKEN_ENV) or None


# ---------------------------------------------------------------- loading


def load_tokenizer(path_or_id: str, revision: str | None = None) -> Any:
    """The model's tokenizer, with a pad token (its EOS token when it has none, as for Llama)."""
    from transformers import AutoTokenizer

    from thinker.models.adapters import adapter_for

    adapter_for(path_or_id).register()  # AutoTokenizer may read config.json, whose model_type must be known
    with hub_errors(path_or_id, revision):
        tokenizer = AutoTokenizer.from_pretrained(path_or_id, revision=revision, token=hub_token())
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ThinkerError(
                f"the tokenizer of {path_or_id} has neither a pad nor an end-of-sequence token",
                f"model.source={path_or_id}",
                "use a model whose tokenizer defines eos_token",
                stage="train",
            )
        tokenizer.pad_token = tokenizer.eos_token
    folder = tokenizer_source_folder(path_or_id, revision)
    if folder is not None:  # what the next config check counts tokens with (thinker.models.tokenizer_snapshot)
        from thinker.models.tokenizer_snapshot import save_snapshot

        save_snapshot(tokenizer, folder)
    return tokenizer


def tokenizer_source_folder(path_or_id: str, revision: str | None = None) -> Path | None:
    """The folder a tokenizer loads from: the folder itself, or a hub id's snapshot in the local cache."""
    folder = Path(path_or_id).expanduser()
    if folder.is_dir():
        return folder
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(path_or_id, "tokenizer.json", revision=revision)
    return Path(cached).parent if isinstance(cached, str) else None


def load_training_tokenizer(cfg: Any) -> Any:
    """The tokenizer the local backend trains with (the builtin model is built on first use, as in training).

    Training loads it from training_start_point(path); for a registered LoRA fine-tune that is its parent
    merged into the base, whose tokenizer is copied from the adapter folder, so loading it from `path`
    itself gives the same tokenizer without merging any weights.
    """
    from thinker.paths import resolve_input

    path = resolve_model_path(cfg.model, int(cfg.seed), [resolve_input(p) for p in cfg.model.tokenizer_corpus])
    return load_tokenizer(path, cfg.model.revision)


def load_causal_lm(
    path_or_id: str,
    *,
    method: str,
    quant: Mapping[str, Any] | None = None,
    dtype: str = "fp32",
    revision: str | None = None,
    device_map: Any = None,
    attn_implementation: str = "sdpa",
    family: str | None = None,
) -> Any:
    """Load a causal LM through the adapter of its architecture (docs/decisions/0008-local-model-registry.md): the one config.json
    names, else `family` (ModelConfig.family; what a hub id cannot say before its download).

    `method` qlora loads it in 4 bit (bitsandbytes NF4/FP4) where the family supports that; `dtype` is the
    dtype of the unquantised weights; `quant` holds the qlora settings (quant_type, double_quant,
    compute_dtype). Safetensors only. Returns the model itself (a transformers PreTrainedModel).
    """
    return load_model_adapter(path_or_id, method=method, quant=quant, dtype=dtype, revision=revision,
                              device_map=device_map, attn_implementation=attn_implementation, family=family).model


def load_model_adapter(path_or_id: str, *, family: str | None = None, method: str = "full",
                       quant: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
    """The architecture adapter (thinker.models.adapters.ModelAdapter, not a LoRA adapter) wrapping the model
    loaded from `path_or_id`."""
    from thinker.models.adapters import adapter_for

    return adapter_for(path_or_id, family).load(str(path_or_id), method=method, quant=quant, **kwargs)


def bnb_4bit_config(quant: Mapping[str, Any]) -> Any:
    from transformers import BitsAndBytesConfig

    quant_type = str(quant["quant_type"])
    if quant_type not in QUANT_TYPES:
        raise ThinkerError(
            f"4-bit quant_type {quant_type!r} is not one of {list(QUANT_TYPES)}",
            f"method.quant_type={quant_type}",
            "use method.quant_type=nf4",
            stage="train",
        )
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant_type,
        bnb_4bit_use_double_quant=bool(quant["double_quant"]),
        bnb_4bit_compute_dtype=torch_dtype(quant["compute_dtype"], "method.compute_dtype"),
    )


def torch_dtype(name: Any, option: str) -> Any:
    """fp32 / bf16 / fp16 as a torch dtype; other precisions (fp8, int8, int4) are not load dtypes."""
    import torch

    key = str(name)
    if key not in DTYPES:
        raise ThinkerError(
            f"precision {key!r} cannot be used to load weights (choose from {list(DTYPES)})",
            f"{option}={key}",
            f"set {option}=fp32 (or bf16 on hardware that supports it)",
            stage="train",
        )
    return getattr(torch, DTYPES[key])


def default_device_map() -> dict[str, Any]:
    import torch

    return {"": torch.cuda.current_device()} if torch.cuda.is_available() else {"": "cpu"}


def require_safetensors(path_or_id: str) -> None:
    """Refuse a local folder that only holds pickle weights (hub ids are checked by use_safetensors=True)."""
    folder = Path(path_or_id)
    if not folder.is_dir():
        return
    files = [p.name for p in folder.iterdir() if p.is_file()]
    if any(name.endswith(".safetensors") for name in files):
        return
    pickles = sorted(name for name in files if name.endswith(PICKLE_SUFFIXES))
    what = (
        f"model folder {folder} holds only pickle weights ({', '.join(pickles)}); thinker loads safetensors only"
        if pickles
        else f"model folder {folder} holds no model weights (no *.safetensors file)"
    )
    raise ThinkerError(
        what,
        f"model.source={path_or_id}",
        "re-save the model with save_pretrained(..., safe_serialization=True) or convert it to safetensors",
        stage="train",
    )


# ---------------------------------------------------------------- loader errors


@contextmanager
def hub_errors(path_or_id: str, revision: str | None) -> Iterator[None]:
    """Turn download and loader failures into ThinkerErrors (every hub error is an OSError)."""
    try:
        yield
    except OSError as error:
        raise _as_thinker_error(error, path_or_id, revision) from error


def _as_thinker_error(error: BaseException, path_or_id: str, revision: str | None) -> ThinkerError:
    from huggingface_hub import errors as hub

    where = f"model.source={path_or_id}" + (f" (revision {revision})" if revision else "")
    chain = _exception_chain(error)

    def caused_by(kind: type) -> bool:
        return any(isinstance(e, kind) for e in chain)

    if caused_by(hub.GatedRepoError):
        token_state = "the token in HF_TOKEN has no access to it" if hub_token() else "HF_TOKEN is not set"
        return ThinkerError(
            f"{path_or_id} is a gated repository on the hub and {token_state}",
            where,
            "request access on its hub page, then export HF_TOKEN with a token that has it",
            stage="train",
        )
    if caused_by(hub.RevisionNotFoundError):
        return ThinkerError(
            f"revision {revision!r} does not exist for {path_or_id}",
            where,
            "set model.revision to an existing branch, tag or commit (or null for main)",
            stage="train",
        )
    if caused_by(hub.RepositoryNotFoundError):
        return ThinkerError(
            f"{path_or_id} is neither a local folder nor a model on the hub",
            where,
            "check model.source (for a private repository export HF_TOKEN)",
            stage="train",
        )
    if _is_download_failure(error, chain):
        return ThinkerError(
            f"could not download {path_or_id} (offline, hub unreachable or not in the local cache)",
            where,
            "check the network and HF_TOKEN, or import the model first and give its local folder",
            stage="train",
        )
    message = first_line(error)
    if "safetensors" in message:
        return ThinkerError(
            f"{path_or_id} has no safetensors weights; thinker loads safetensors only",
            where,
            "pick a model published in safetensors, or convert it and give the local folder",
            stage="train",
        )
    return ThinkerError(f"could not load {path_or_id}: {message}", where, "check model.source", stage="train")


def _is_download_failure(error: BaseException, chain: list[BaseException]) -> bool:
    from huggingface_hub import errors as hub

    network = (hub.LocalEntryNotFoundError, hub.OfflineModeIsEnabled, hub.HfHubHTTPError, ConnectionError)
    return any(isinstance(e, network) for e in chain) or "couldn't connect" in str(error)


def _exception_chain(error: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def first_line(error: BaseException) -> str:
    """The error's first line, with the token value scrubbed in case a library echoed it."""
    line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    token = hub_token()
    return line.replace(token, "<HF_TOKEN>") if token else line


# ---------------------------------------------------------------- counting


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) logical parameter counts, as peft's get_nb_trainable_parameters counts them.

    bitsandbytes packs two 4-bit values per byte of its storage dtype, so a Params4bit's numel() is
    half (times the storage itemsize) of the weight's logical size.
    """
    trainable = total = 0
    for param in model.parameters():  # parameters() skips tied duplicates, so embeddings count once
        count = param.numel()
        if param.__class__.__name__ == "Params4bit":
            count *= 2 * param.element_size()
        total += count
        if param.requires_grad:
            trainable += count
    return trainable, total
