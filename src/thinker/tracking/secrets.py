"""Keep credentials out of logs, MLflow params and tags, run records and the console.

What counts as a secret, and nothing more (so that ordinary text, paths above all, stays readable):

1. The values of the environment variables named in SECRET_ENV_VARS, and of any variable whose name *ends*
   in a credential word (``*_API_KEY``, ``*_TOKEN``, ``*_SECRET``, ``*_PASSWORD``, ...; see is_secret_key).
   A name that merely *contains* such a word is not a credential: ``HF_TOKEN_PATH=/home/me/...`` names a
   file, and masking its value would hide every path below it.
2. Strings with a well-known credential prefix (KEY_PREFIXES: ``sk-``, ``hf_``, ``tml-``, ``fw_``, ...), and
   ``Bearer <token>`` headers.
3. The password of a URI with user info, ``scheme://user:password@host`` (``postgresql://u:pw@db/x`` becomes
   ``postgresql://u:***@db/x``; scheme, user and host stay visible). Passwords of such URIs found in the
   environment (MLFLOW_TRACKING_URI, DATABASE_URL, ...) are also masked where they appear on their own, and
   register_secret() adds values known only from the config.
4. In config-like mappings (mask()), the value under a key that names a credential (is_secret_key):
   ``api_key``, ``HF_TOKEN``, ``password``, ``client_secret`` -- but not ``api_key_env`` (it names a
   variable), ``tokenizer_corpus``, ``max_new_tokens``, ``trained_tokens``, ``pad_token`` or ``HF_TOKEN_PATH``.

Values shorter than MIN_SECRET_LENGTH are never replaced on their own (``1``, ``true`` would garble every
message); inside a URI or after a known prefix they are masked whatever their length.

install_log_masking() puts SecretMaskingFilter on the root logger's handlers (the console and Hydra's
``launch.log``), so everything logged passes through mask_text.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

MASK = "***"
MIN_SECRET_LENGTH = 8

# Environment variables that hold credentials. Documented rather than guessed: a name is either here or ends
# in a credential word (is_secret_key); HF_TOKEN_PATH, TOKENIZERS_PARALLELISM, KEYRING_BACKEND are not secrets.
SECRET_ENV_VARS: frozenset[str] = frozenset({
    # Hugging Face hub
    "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_HUB_TOKEN", "HUGGINGFACE_TOKEN",
    # training services and hosted fine-tuning providers
    "TINKER_API_KEY", "OPENAI_API_KEY", "TOGETHER_API_KEY", "FIREWORKS_API_KEY", "MISTRAL_API_KEY",
    "DEEPSEEK_API_KEY", "ANTHROPIC_API_KEY", "GOOGLE_API_KEY", "GEMINI_API_KEY", "COHERE_API_KEY",
    "GROQ_API_KEY", "REPLICATE_API_TOKEN",
    # experiment tracking
    "WANDB_API_KEY", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "COMET_API_KEY", "NEPTUNE_API_TOKEN",
    # clouds and artifact stores
    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_STORAGE_ACCESS_KEY", "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_SAS_TOKEN", "AZURE_CLIENT_SECRET",
    "GOOGLE_APPLICATION_CREDENTIALS_JSON",
    # code hosting
    "GITHUB_TOKEN", "GH_TOKEN", "GITLAB_TOKEN",
})

# Prefixes of credentials as their issuers print them. Lengths are lower bounds well below the real ones,
# high enough that identifiers such as `hf_transfer` or `sk-learn` are left alone.
KEY_PREFIXES: tuple[str, ...] = (
    r"sk-[A-Za-z0-9_\-]{16,}",  # OpenAI, Anthropic (sk-ant-), DeepSeek
    r"hf_[A-Za-z0-9]{16,}",  # Hugging Face
    r"tml-[A-Za-z0-9_\-]{16,}",  # Tinker
    r"fw_[A-Za-z0-9]{16,}",  # Fireworks
    r"tgp_v1_[A-Za-z0-9_\-]{16,}",  # Together
    r"gsk_[A-Za-z0-9]{16,}",  # Groq
    r"r8_[A-Za-z0-9]{16,}",  # Replicate
    r"xai-[A-Za-z0-9]{16,}",  # xAI
    r"nvapi-[A-Za-z0-9_\-]{16,}",  # NVIDIA
    r"gh[pousr]_[A-Za-z0-9]{20,}", r"github_pat_[A-Za-z0-9_]{20,}",  # GitHub
    r"glpat-[A-Za-z0-9_\-]{16,}",  # GitLab
    r"xox[abprs]-[A-Za-z0-9\-]{10,}",  # Slack
    r"AIza[0-9A-Za-z_\-]{30,}",  # Google API keys
)
_PREFIXED = re.compile(r"(?<![A-Za-z0-9_\-])(?:" + "|".join(KEY_PREFIXES) + ")")
# a token has a digit somewhere ("Bearer authentication" is prose)
_BEARER = re.compile(r"(\bBearer\s+)(?=[A-Za-z._~+/\-]*\d)[A-Za-z0-9._~+/\-]{8,}=*", re.IGNORECASE)

# scheme://user:password@host -- the user may be empty (redis://:pw@host); the password runs to the last @
# of the authority (it may hold @ itself), which ends at the first /, ?, # or whitespace.
# Hydra's override echo escapes colons (postgresql\://user\:pw@host), so an optional backslash is allowed.
_URI_PASSWORD = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*\\?://[^\s:/?#@\\]*\\?:)(?P<password>[^\s/?#]*)@")

# A key names a credential when it *ends* in one of these words, not merely contains one.
_SECRET_KEY = re.compile(
    r"(?:^|[_.\-])(?:api[_-]?key|access[_-]?key|secret[_-]?key|private[_-]?key|account[_-]?key|storage[_-]?key"
    r"|token|secret|password|passwd|connection[_-]?string)$",
    re.IGNORECASE,
)
# Deliberately absent: `pwd` ($PWD is the working directory) and `credentials`
# ($GOOGLE_APPLICATION_CREDENTIALS is a file path); masking a path's value hides every path below it.
# Keys that end like a credential but are not one: tokenizer special tokens (pad_token: "<|endoftext|>").
_NOT_SECRET_KEY = re.compile(
    r"(?:^|[_.\-])(?:pad|eos|bos|unk|sep|cls|mask|additional_special|special|start|end|next|first|last)_token$",
    re.IGNORECASE,
)

_registered: set[str] = set()


# ---------------------------------------------------------------- what is secret


def is_secret_key(key: str) -> bool:
    """True when a mapping key or a variable name names a credential (ends in api_key, token, password...)."""
    return bool(_SECRET_KEY.search(key)) and not _NOT_SECRET_KEY.search(key)


def is_secret_env_var(name: str) -> bool:
    return name.upper() in SECRET_ENV_VARS or is_secret_key(name)


def uri_passwords(text: str) -> list[str]:
    """The passwords of every scheme://user:password@host URI in `text`, as written and URL-decoded."""
    found: set[str] = set()
    for match in _URI_PASSWORD.finditer(text):
        password = match.group("password")
        if password and password != MASK:
            found.update({password, unquote(password)})
    return sorted(found)


def register_secret(value: str | None) -> None:
    """Mask `value` wherever it appears from now on in this process (a credential known only from the config).

    Given a URI with a password (register_secret(cfg.logger.tracking_uri)), only its password is registered:
    the rest of the URI stays readable."""
    if not value:
        return
    passwords = uri_passwords(str(value))
    _registered.update(passwords if passwords else [str(value)])


def secret_env_values(env: Mapping[str, str] | None = None) -> list[str]:
    """The values to mask wherever they appear, longest first (so a value containing another goes whole)."""
    env = os.environ if env is None else env
    values: set[str] = set(_registered)
    # not env.items(): another thread may unset a variable meanwhile (MLflow's telemetry thread sets and unsets
    # _MLFLOW_TELEMETRY_SESSION_ID), and items() would then raise KeyError out of a log line; listing the names
    # of os.environ is atomic, and get() skips one that is gone
    for name in tuple(env):
        value = env.get(name)
        if not value:
            continue
        if is_secret_env_var(name):
            values.add(value)
        if "://" in value:  # MLFLOW_TRACKING_URI=postgresql://u:pw@host/db, DATABASE_URL, ...
            values.update(uri_passwords(value))
    return sorted((v for v in values if len(v) >= MIN_SECRET_LENGTH), key=len, reverse=True)


# ---------------------------------------------------------------- masking


def mask_uri_passwords(text: str) -> str:
    return _URI_PASSWORD.sub(lambda m: f"{m.group('head')}{MASK}@", text)


def mask_text(text: str, env: Mapping[str, str] | None = None) -> str:
    """`text` with every credential replaced by *** (see the module docstring for what counts)."""
    text = str(text)
    values = secret_env_values(env)
    # passwords of URIs in this very text, also where they appear outside the URI
    values += [p for p in uri_passwords(text) if len(p) >= MIN_SECRET_LENGTH and p not in values]
    text = mask_uri_passwords(text)
    for value in sorted(values, key=len, reverse=True):
        text = text.replace(value, MASK)
    text = _BEARER.sub(lambda m: f"{m.group(1)}{MASK}", text)
    return _PREFIXED.sub(MASK, text)


def mask(obj: Any, env: Mapping[str, str] | None = None) -> Any:
    """A copy of a JSON-like structure with every secret replaced by ***: values under credential keys, and
    credentials inside any string (mask_text)."""
    if isinstance(obj, Mapping):
        return {
            k: (MASK if is_secret_key(str(k)) and v not in (None, "") else mask(v, env)) for k, v in obj.items()
        }
    if isinstance(obj, list | tuple):
        return [mask(v, env) for v in obj]
    if isinstance(obj, str):
        return mask_text(obj, env)
    return obj


# ---------------------------------------------------------------- logging


class SecretMaskingFilter(logging.Filter):
    """Rewrite each record's message (and traceback text) through mask_text before a handler formats it.

    The message is formatted here (msg % args) and the result stored as msg with no args, so a secret passed
    as an argument is masked too. Put it on handlers, not loggers: logger filters never see records that
    propagate from child loggers.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string: leave it for the handler to report
            return True
        record.msg = mask_text(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_text(record.stack_info)
        return True


def install_log_masking(logger: logging.Logger | None = None) -> int:
    """Attach a SecretMaskingFilter to every handler of `logger` (default: the root logger, which holds the
    console and Hydra's launch.log handlers) and of every other logger that has handlers of its own.

    Idempotent: a handler that already has one gets no second. Handlers added later (Hydra reconfigures logging
    for each job of a multirun) need another call. Returns how many handlers got a filter now.
    """
    loggers = [logger or logging.getLogger()]
    if logger is None:
        loggers += [lg for lg in list(logging.Logger.manager.loggerDict.values()) if isinstance(lg, logging.Logger)]
    added = 0
    for lg in loggers:
        for handler in list(lg.handlers):
            if not any(isinstance(f, SecretMaskingFilter) for f in handler.filters):
                handler.addFilter(SecretMaskingFilter())
                added += 1
    return added
