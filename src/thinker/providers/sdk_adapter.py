"""The plumbing of the providers reached through an official SDK (Together, Fireworks, OpenAI).

Their SDKs are generated from each provider's OpenAPI spec by the same generator (Stainless), so clients,
errors (APIConnectionError, APIStatusError with `status_code` and `body`) and chat completions have one shape.
SdkAdapter holds what follows from that, once:
- `client()`: the SDK's client, after checking that the key is set (a missing key is named, never guessed);
- `call()` / `request()`: one SDK call; while training, a transient failure (no answer, 408, 429, 5xx after the
  SDK's own retries) is ProviderUnreachable, so the flow waits and asks again; at eval, and for anything else,
  one ThinkerError line (401/403: the key) that never quotes the key;
- `create_once()`: the create POST, never re-sent by the SDK: an answer that may hide a made job is
  CreateOutcomeUnknown (ProviderAdapter.start looks the job up before sending it again), a 429 is sent again;
- `chat()`: evaluation's completions, one per prompt, with evaluation.decoding's settings.

A provider module keeps only its own: capabilities, checks, payload, job states, the reattach look-up, and
these hooks: `label`, `sdk_name`, `client_class`, `keys_page`, `client_options()` (extra client settings and
checks), `refusal()` (its own refusals first), `create_may_have_landed()`, `max_tokens_key`.
"""

from __future__ import annotations

import importlib
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from thinker.errors import ThinkerError
from thinker.providers.adapter import CreateOutcomeUnknown, ProviderAdapter, ProviderUnreachable

T = TypeVar("T")

CREATE_JOB = "create the fine-tuning job"


class SdkAdapter(ProviderAdapter):
    label = ""  # the provider's name in messages ("Together")
    sdk_name = ""  # the SDK's import name
    client_class = ""  # the SDK's client class
    keys_page = ""  # where a user makes an API key
    key_pattern: re.Pattern[str] | None = None  # key-like text the provider's messages may echo (scrubbed)
    quote_key_refusal = False  # a 401/403's own text is quoted (only where it never echoes part of the key)
    request_timeout = 60.0  # seconds per request; tests lower it
    create_timeout: float | None = None  # the create POST's timeout (None: request_timeout)
    chat_timeout: float | None = None  # a chat completion's timeout (None: request_timeout)
    read_retries = 2  # the SDK's own retries (429, 5xx, dropped connections) of every call but the create POST
    create_rate_limit_retries = 3  # a 429 on create made nothing, so it is sent again
    create_backoff = (1.0, 30.0)  # retry_delay's first wait and cap (seconds) between rate-limited creates
    max_tokens_key = "max_tokens"  # the chat completion's name for evaluation.decoding.max_new_tokens

    def sdk_module(self) -> str:
        return self.sdk_name

    def sdk(self) -> Any:
        return importlib.import_module(self.sdk_name)

    # ------------------------------------------------------------------ client

    def client(self, stage: str = "train", timeout: float | None = None, max_retries: int | None = None) -> Any:
        """The SDK's client (use it in a `with` block: it closes its connections)."""
        if not self.api_key():
            raise ThinkerError(f"{self.api_key_env} is not set", f"provider={self.name}",
                               f"export {self.api_key_env}=<your {self.label} API key> ({self.keys_page})",
                               stage=stage)
        settings: dict[str, Any] = {"api_key": self.api_key(), "base_url": self.base_url(),
                                    "timeout": timeout or self.request_timeout,
                                    "max_retries": self.read_retries if max_retries is None else max_retries}
        settings.update(self.client_options(settings, stage))
        return getattr(self.sdk(), self.client_class)(**settings)

    def client_options(self, settings: dict[str, Any], stage: str) -> dict[str, Any]:
        """Hook: client settings beyond key, base URL, timeout and retries (checked here, like the key)."""
        return {}

    # ------------------------------------------------------------------ calls

    def call(self, fn: Callable[[], T], what: str, stage: str = "train", *, model: str | None = None,
             fix: str | None = None) -> T:
        """One SDK call (`what`: what it does, read after "to"). See the module's docstring for the errors."""
        try:
            return fn()
        except self.sdk().APIError as error:
            if stage != "eval" and transient(error):
                raise ProviderUnreachable(f"{self.label} did not answer while trying to {what} "
                                          f"({describe(error)})") from quoted(error)
            raise self.refusal(error, what, stage, model=model, fix=fix) from quoted(error)

    def request(self, fn: Callable[[Any], T], what: str, stage: str = "train", **kwargs: Any) -> T:
        """`call()` with a client of its own."""
        with self.client(stage) as client:
            return self.call(lambda: fn(client), what, stage, **kwargs)

    def refusal(self, error: Any, what: str, stage: str, model: str | None = None,
                fix: str | None = None) -> ThinkerError:
        """The one-line error for a failed call. Providers override it for refusals of their own (quota,
        account, endpoint) and fall back to this."""
        status = getattr(error, "status_code", None)
        where = f"provider={self.name}"
        if status is None:
            return ThinkerError(f"{self.label} did not answer while trying to {what} ({describe(error)})", where,
                                "try again later (check the network, or provider.base_url)", stage=stage)
        message = self.message_of(error)
        if status in (401, 403):
            said = f": {message}" if self.quote_key_refusal else ""
            return ThinkerError(f"{self.label} refused the API key ({status}{said}) while trying to {what}",
                                f"{where}, {self.api_key_env}",
                                f"set {self.api_key_env} to a valid key from {self.keys_page}", stage=stage)
        fix = fix or ("try again later" if transient(error) else
                      f"fix what {self.label} names, then launch again (a job it made is reattached to)")
        return ThinkerError(f"{self.label} refused to {what} ({status}: {message})", where, fix, stage=stage)

    def message_of(self, error: Any) -> str:
        """The provider's own words for an error, without anything key-like."""
        text = self.scrub(provider_message(error))
        return self.key_pattern.sub("***", text) if self.key_pattern else text

    # ------------------------------------------------------------------ create and chat

    def create_once(self, send: Callable[[Any], T], what: str = CREATE_JOB) -> T:
        """The create POST (`send(client)`), sent by us only: see the module's docstring."""
        with self.client(timeout=self.create_timeout or self.request_timeout, max_retries=0) as client:
            for attempt in range(self.create_rate_limit_retries + 1):
                try:
                    return send(client)
                except self.sdk().APIError as error:
                    if self.create_may_have_landed(error):
                        raise CreateOutcomeUnknown(f"{self.label}'s answer to the create was lost "
                                                   f"({describe(error)})") from None
                    if not transient(error) or attempt == self.create_rate_limit_retries:
                        raise self.refusal(error, what, "train") from quoted(error)
                    time.sleep(retry_delay(error, attempt, *self.create_backoff))
        raise AssertionError("unreachable: the loop returns or raises")

    def create_may_have_landed(self, error: Any) -> bool:
        """Whether a failed create may still have made the job: no answer, a timeout, 409 or a server error."""
        status = getattr(error, "status_code", None)
        return status is None or status in (408, 409) or status >= 500

    def chat(self, model: str, prompts: list[Any], decoding: Mapping[str, Any], seed: int) -> list[str]:
        settings = self.sampling(decoding)
        with self.client("eval", timeout=self.chat_timeout) as client:
            return [message_text(self.call(lambda p=prompt: client.chat.completions.create(
                model=model, messages=chat_messages(p), seed=int(seed), **settings),
                f"sample {model}", "eval", model=model)) for prompt in prompts]

    def sampling(self, decoding: Mapping[str, Any]) -> dict[str, Any]:
        """evaluation.decoding -> chat-completion settings; greedy is temperature 0 (top_p is left out)."""
        settings: dict[str, Any] = {self.max_tokens_key: int(decoding.get("max_new_tokens", 256))}
        if decoding.get("do_sample"):
            settings.update(temperature=float(decoding.get("temperature", 1.0)),
                            top_p=float(decoding.get("top_p", 1.0)))
        else:
            settings["temperature"] = 0.0
        return settings


def chat_messages(prompt: Any) -> list[dict]:
    """A prompt as chat messages: a text is one user message, a conversation is sent as it is."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in prompt]


def transient(error: Any) -> bool:
    """Worth asking again later: no answer, a timeout, a rate limit (not a used-up quota) or a server error."""
    status = getattr(error, "status_code", None)
    if status is None:
        return True
    if status == 429:
        return getattr(error, "code", None) != "insufficient_quota"
    return status == 408 or status >= 500


def quoted(error: Any) -> Any:
    """The SDK error to chain to ours, except a 401's: some providers' 401 text quotes part of the key."""
    return None if getattr(error, "status_code", None) == 401 else error


def describe(error: Any) -> str:
    status = getattr(error, "status_code", None)
    return f"{status} {type(error).__name__}" if status else type(error).__name__


def provider_message(error: Any) -> str:
    """The provider's own words: `error.message` (OpenAI style), `message` (grpc-gateway), or a plain string."""
    body = getattr(error, "body", None)
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
        if body.get("message"):
            return str(body["message"])
    return first_line(error)[:300]


def first_line(error: Any) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def message_text(reply: Any) -> str:
    """A chat completion's text (content parts joined); empty when the provider answered nothing."""
    message = reply.choices[0].message if reply.choices else None
    content = getattr(message, "content", None) or ""
    if isinstance(content, list):
        return "".join(str(getattr(part, "text", "") or "") for part in content)
    return str(content)


def retry_delay(error: Any, attempt: int, first: float = 1.0, cap: float = 30.0) -> float:
    """Seconds before retrying a rate-limited request: the answer's Retry-After (capped at a minute), else an
    exponential backoff from `first` seconds, capped at `cap`."""
    headers = getattr(getattr(error, "response", None), "headers", None) or {}
    try:
        return min(max(float(headers.get("retry-after", "")), 0.0), 60.0)
    except (TypeError, ValueError):
        return min(first * 2.0 ** attempt, cap)
