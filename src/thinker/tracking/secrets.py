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
4. The value under a key that names a credential (is_secret_key: the key's *last word* is token, secret,
   password, passwd, passphrase, dsn, credentials or auth, or its last two words are api key, access key,
   private key, connection string ...): ``api_key``, ``apiKey``, ``HF_TOKEN``, ``provider.options.token``,
   ``client_secret``, ``sentry_dsn`` -- but not ``api_key_env`` (it names a variable), ``key`` (a schema
   field, a sort key), ``tokenizer``, ``max_new_tokens``, ``trained_tokens``, ``pad_token`` or
   ``HF_TOKEN_PATH``. mask() applies it to mappings; mask_text() to the same keys written as text: an override
   ``+provider.options.token=VALUE`` (the run record's overrides, Hydra's overrides.yaml and hydra.yaml, the
   launcher's echo, sweep labels), a YAML line ``token: VALUE`` (.hydra/config.yaml, ``--cfg`` output) and a
   quoted ``"token": VALUE`` (JSON, Python reprs). Interpolations (``${oc.env:X}``) and nulls stay readable.

mask_text() is the one function for text and mask() the one for structures (it applies mask_text to every
string); every place that writes or prints a config goes through one of them (docs/secrets.md).
Masking never touches the config a run uses: only what is written or printed.

Values shorter than MIN_SECRET_LENGTH are never replaced on their own (``1``, ``true`` would garble every
message); inside a URI or after a known prefix they are masked whatever their length.

install_log_masking() puts SecretMaskingFilter on the root logger's handlers (the console and Hydra's
``launch.log``), so everything logged passes through mask_text.
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
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

# A key's words, whatever its spelling: snake_case, kebab-case, dotted paths, camelCase (apiKey -> api, key).
_KEY_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
# A key names a credential when its last word is one of these (whole words: `tokens`, `tokenizer` are not)...
_SECRET_LAST_WORDS = frozenset({
    "token", "secret", "password", "passwd", "passphrase", "apikey", "dsn", "credential", "credentials", "auth"})
# ... or its last two words are one of these. A bare `key` is a schema field, a sort key, a dict key.
_SECRET_LAST_PAIRS = frozenset({
    ("api", "key"), ("access", "key"), ("secret", "key"), ("private", "key"), ("account", "key"),
    ("storage", "key"), ("encryption", "key"), ("signing", "key"), ("connection", "string")})
# Keys that end like a credential but are not one: tokenizer special tokens (pad_token: "<|endoftext|>").
_SPECIAL_TOKEN_WORDS = frozenset({
    "pad", "eos", "bos", "unk", "sep", "cls", "mask", "special", "start", "end", "next", "first", "last"})
# Deliberately absent: `pwd` ($PWD is the working directory). An environment variable named *_CREDENTIALS
# holds a file path ($GOOGLE_APPLICATION_CREDENTIALS): its value is not masked wherever it appears, since
# masking a path hides every path below it (is_secret_env_var); a config key `credentials` is masked in place.
_PATH_VARIABLE_WORDS = frozenset({"credential", "credentials"})

_registered: set[str] = set()


# ---------------------------------------------------------------- what is secret


def _key_words(key: str) -> list[str]:
    return [word.lower() for word in _KEY_WORD.findall(key)]


def is_secret_key(key: str) -> bool:
    """True when a mapping key, a dotted config path or a variable name names a credential: its last word is
    token, secret, password ... or its last two are api key, access key ... (see the module docstring)."""
    words = _key_words(str(key))
    if not words:
        return False
    if words[-1] in _SECRET_LAST_WORDS:
        return not (words[-1] == "token" and len(words) > 1 and words[-2] in _SPECIAL_TOKEN_WORDS)
    return tuple(words[-2:]) in _SECRET_LAST_PAIRS


def is_secret_env_var(name: str) -> bool:
    if name.upper() in SECRET_ENV_VARS:
        return True
    return is_secret_key(name) and _key_words(name)[-1] not in _PATH_VARIABLE_WORDS


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


_KEY = r"[A-Za-z_][\w.\-]*"
_OVERRIDE_PREFIX = r"(?:--?|\+{1,2}|~)?"  # --api-key=, +new.key=, ++forced.key=
# A whole line that is one YAML mapping entry, `  token: VALUE` or `- token: VALUE` (.hydra/config.yaml, --cfg
# output): the value runs to the end of the line.
_YAML_ENTRY = re.compile(
    rf"^(?P<head>[ \t]*(?:-[ \t]+)?(?P<q>[\"']?)(?P<key>{_KEY})(?P=q):[ \t]+)(?P<value>\S.*?)[ \t]*$",
    re.MULTILINE)
# A whole line that is one override, as given or as a YAML list item (`- +provider.options.token=VALUE`,
# overrides.yaml): the value runs to the end of the line (or its closing quote), spaces included, unless
# another `key=` follows (`token=X seed=1` is two overrides: _ASSIGNMENT masks the first).
_OVERRIDE_LINE = re.compile(
    rf"^(?P<head>[ \t]*(?:-[ \t]+)?(?P<q>[\"']?){_OVERRIDE_PREFIX}(?P<key>{_KEY})=)"
    rf"(?P<value>(?:(?![ \t,]{_OVERRIDE_PREFIX}{_KEY}=).)*?)(?P=q)[ \t]*$",
    re.MULTILINE)
# `key=VALUE` inside a line (a sweep label, the launcher's echo, hydra.job.override_dirname's `a=1,b=2`, a
# query string): the value is quoted, or runs to whitespace, a comma, & or ; (a backslash escapes one).
_ASSIGNMENT = re.compile(
    rf"(?<![\w.\-+~])(?P<head>{_OVERRIDE_PREFIX}(?P<key>{_KEY})=)"
    r"(?P<value>'[^']*'|\"[^\"]*\"|(?:\\.|[^\s,&;'\"\\])+)")
# `"key": VALUE` with the key quoted (JSON, Python reprs)
_QUOTED_ENTRY = re.compile(
    rf"(?P<head>(?P<q>[\"'])(?P<key>{_KEY})(?P=q)[ \t]*:[ \t]*)"
    r"(?P<value>\"(?:\\.|[^\"\\])*\"|'(?:\\.|[^'\\])*'|[^\s,}\]]+)")
_KEEP_VALUES = frozenset({"", "null", "~", "none", "true", "false", "{}", "[]", MASK})


def _is_kept(value: str) -> bool:
    """Values under a credential key that say nothing: unset, a boolean, an interpolation (${oc.env:X})."""
    value = value.strip()
    return value.lower() in _KEEP_VALUES or (value.startswith("${") and value.endswith("}"))


def _masked_entry(match: re.Match[str], yaml: bool = False) -> str:
    head, value = match.group("head"), match.group("value")
    if not is_secret_key(match.group("key")):
        return match.group(0)
    quote = value[0] if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"" else ""
    if _is_kept(value[1:-1] if quote else value):
        return match.group(0)
    # YAML reads a bare *** as an alias: a YAML value is written quoted, so the file still loads
    masked = f"{quote}{MASK}{quote}" if quote or not yaml else f"'{MASK}'"
    return match.group(0).replace(head + value, head + masked, 1)


def mask_secret_entries(text: str) -> str:
    """The values of credential keys written as text (overrides, YAML lines, JSON) replaced by ***."""
    if "=" in text:
        text = _OVERRIDE_LINE.sub(_masked_entry, text)
        text = _ASSIGNMENT.sub(_masked_entry, text)
    if ":" in text:
        text = _YAML_ENTRY.sub(lambda m: _masked_entry(m, yaml=True), text)
        text = _QUOTED_ENTRY.sub(_masked_entry, text)
    return text


def mask_text(text: str, env: Mapping[str, str] | None = None) -> str:
    """`text` with every credential replaced by *** (see the module docstring for what counts)."""
    text = mask_secret_entries(str(text))
    values = secret_env_values(env)
    # passwords of URIs in this very text, also where they appear outside the URI
    values += [p for p in uri_passwords(text) if len(p) >= MIN_SECRET_LENGTH and p not in values]
    text = mask_uri_passwords(text)
    for value in sorted(values, key=len, reverse=True):
        text = text.replace(value, MASK)
    text = _BEARER.sub(lambda m: f"{m.group(1)}{MASK}", text)
    return _PREFIXED.sub(MASK, text)


def _kept_under_secret_key(value: Any) -> bool:
    return value is None or isinstance(value, bool) or (isinstance(value, str) and _is_kept(value))


def mask(obj: Any, env: Mapping[str, str] | None = None) -> Any:
    """A copy of a JSON-like structure with every secret replaced by ***: values under credential keys, and
    credentials inside any string (mask_text)."""
    if isinstance(obj, Mapping):
        return {
            k: (MASK if is_secret_key(str(k)) and not _kept_under_secret_key(v) else mask(v, env))
            for k, v in obj.items()
        }
    if isinstance(obj, list | tuple):
        return [mask(v, env) for v in obj]
    if isinstance(obj, str):
        return mask_text(obj, env)
    return obj


def config_secrets(obj: Any) -> list[str]:
    """The values under credential keys in a JSON-like config (what mask() hides), as strings."""
    found: list[str] = []
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            if is_secret_key(str(key)) and not _kept_under_secret_key(value):
                if not isinstance(value, Mapping | list):
                    found.append(str(value))
            else:
                found += config_secrets(value)
    elif isinstance(obj, list | tuple):
        for value in obj:
            found += config_secrets(value)
    return found


_OVERRIDE = re.compile(rf"^{_OVERRIDE_PREFIX}(?P<key>{_KEY})=(?P<value>.+)$", re.DOTALL)


def register_override_secrets(args: list[str]) -> None:
    """Mask the values of credential overrides on a command line (`+provider.options.token=...`) wherever they
    appear from now on: a parse error or `--cfg job --package provider.options.token` prints one bare."""
    for arg in args:
        match = _OVERRIDE.match(arg)
        if match and is_secret_key(match.group("key")) and not _is_kept(match.group("value")):
            value = match.group("value")
            register_secret(value)
            register_secret(value.strip("'\"").lstrip("[").rstrip("]"))  # as a parse error may quote it


def register_config_secrets(config: Any) -> None:
    """Mask the config's credentials (provider.options.token=...) wherever they appear from now on in this
    process, also without their key: an SDK's error message may quote one."""
    for value in config_secrets(config):
        register_secret(value)


def mask_file(path: str | Path) -> bool:
    """Rewrite a text file (a config Hydra saved) with its secrets masked; True when it held any."""
    from thinker.tracking.atomic import atomic_write_text

    path = Path(path)
    text = path.read_text(encoding="utf-8")
    masked = mask_text(text)
    if masked == text:
        return False
    atomic_write_text(path, masked)
    return True


@contextmanager
def masked_stdout() -> Iterator[None]:
    """Hold back what is printed inside the block and print it masked when it ends (Hydra's --cfg and --info
    print the composed config, overrides included, straight to stdout)."""
    real, held = sys.stdout, io.StringIO()
    sys.stdout = held
    try:
        yield
    finally:
        sys.stdout = real
        real.write(mask_text(held.getvalue()))
        real.flush()


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
