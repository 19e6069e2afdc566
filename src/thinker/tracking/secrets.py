"""Keep credentials out of logs, MLflow params and run records.

A value is masked when its key looks like a credential (api_key, token, secret, password) or when the
string itself contains the value of a credential environment variable or has a well-known key prefix.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

MASK = "***"
# A key names a secret when it *ends* in one of these words (HF_TOKEN, api_key), not merely contains one
# (trained_tokens, tokenizer_corpus are not secrets).
_SECRET_KEY = re.compile(r"(^|[_.\-])(api[_-]?key|key|token|secret|password|passwd|credentials?)$", re.IGNORECASE)
# Names of variables that only *name* a credential (api_key_env: TINKER_API_KEY) are not secrets.
_NAMES_A_VARIABLE = re.compile(r"_env$", re.IGNORECASE)
_KEY_PREFIXES = re.compile(r"\b(sk-[A-Za-z0-9_\-]{8,}|hf_[A-Za-z0-9]{8,}|tml-[A-Za-z0-9_\-]{8,}|fw_[A-Za-z0-9]{8,})")
_SECRET_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD)", re.IGNORECASE)


def secret_env_values(env: Mapping[str, str] | None = None) -> list[str]:
    env = os.environ if env is None else env
    # Short values (e.g. "1") would mask innocent text; real credentials are long.
    return sorted({v for k, v in env.items() if _SECRET_ENV.search(k) and len(v) >= 8}, key=len, reverse=True)


def mask_text(text: str, env: Mapping[str, str] | None = None) -> str:
    for value in secret_env_values(env):
        text = text.replace(value, MASK)
    return _KEY_PREFIXES.sub(MASK, text)


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key)) and not _NAMES_A_VARIABLE.search(key)


def mask(obj: Any, env: Mapping[str, str] | None = None) -> Any:
    """Return a copy of a JSON-like structure with every secret-looking value replaced by ***."""
    if isinstance(obj, Mapping):
        return {
            k: (MASK if is_secret_key(str(k)) and v not in (None, "") else mask(v, env)) for k, v in obj.items()
        }
    if isinstance(obj, list | tuple):
        return [mask(v, env) for v in obj]
    if isinstance(obj, str):
        return mask_text(obj, env)
    return obj
