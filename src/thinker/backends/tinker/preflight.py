"""What backend=tinker can know before anything runs: settings the Tinker API cannot express, the SDK, the
key's form, and (for stages that talk to the service) whether the service answers and offers the model.

Nothing here imports the SDK (it imports torch); the service is asked with one plain HTTP GET.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig

from thinker.errors import ThinkerError

KEY_PREFIX = "tml-"  # the SDK refuses any other key
# the SDK's own default (tinker.lib.base_url.DEFAULT_BASE_URL), named here without importing the SDK
DEFAULT_BASE_URL = "https://tinker.thinkingmachines.dev/services/tinker-prod"
PROBE_TIMEOUT_S = 10.0


def tinker_base_name(cfg: DictConfig) -> str:
    """The base model's name on the service: model.tinker_name, else the model option's own name (which is
    what `thinker tinker-serve` offers)."""
    return str(cfg.model.tinker_name or cfg.model.name)


def service_url(configured: str | None, env: Mapping[str, str]) -> str:
    return (configured or env.get("TINKER_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


def check_sdk() -> None:
    if importlib.util.find_spec("tinker") is None:
        raise ThinkerError("the tinker SDK is not installed", "backend=tinker",
                           "pip install -c requirements/lock.txt tinker (it comes with thinker's own install)")


def check_key(var: str, env: Mapping[str, str]) -> None:
    key = env.get(var, "").strip()
    if key and not key.startswith(KEY_PREFIX):
        raise ThinkerError(f"{var} does not look like a Tinker API key (those start with {KEY_PREFIX})",
                           "backend=tinker", f"export {var}={KEY_PREFIX}... (for thinker tinker-serve any "
                           f"{KEY_PREFIX} key works, e.g. {KEY_PREFIX}local)")


def check_settings(cfg: DictConfig, options: Mapping[str, Any]) -> None:
    """LoRA shape and optimizer settings the Tinker API has no way to carry are refused, not ignored."""
    alpha = float(options.get("lora_alpha", 32))
    method = cfg.method
    if float(method.alpha) != alpha:
        raise ThinkerError(
            f"Tinker trains LoRA with a fixed scaling of alpha={alpha:g}; method.alpha={float(method.alpha):g} "
            "cannot be sent", "method.alpha, backend=tinker",
            f"drop method.alpha (it follows the backend: {alpha:g}), or use backend=local for another alpha")
    if float(method.dropout) != 0.0:
        raise ThinkerError(f"Tinker's LoRA has no dropout; method.dropout={float(method.dropout):g} cannot be sent",
                           "method.dropout, backend=tinker", "drop method.dropout (0), or use backend=local")
    if str(method.target_modules) != "all-linear":
        raise ThinkerError(
            f"Tinker chooses LoRA layers by kind (attention, MLP, output), not by name: "
            f"method.target_modules={method.target_modules} cannot be sent", "method.target_modules, backend=tinker",
            "use all-linear (attention + MLP; backend.options.train_unembed=true adds the output layer)")
    if str(method.bias) != "none":
        raise ThinkerError(f"Tinker trains no biases; method.bias={method.bias} cannot be sent",
                           "method.bias, backend=tinker", "drop method.bias (none)")
    if str(cfg.optimizer.name) != "adamw":
        raise ThinkerError(f"Tinker optimizes with AdamW; optimizer={cfg.optimizer.name} cannot be used there",
                           "optimizer, backend=tinker", "use optimizer=adamw (lr, betas, eps, weight_decay, "
                           "max_grad_norm and the schedule are sent every step)")
    in_flight = int(options.get("in_flight", 1))
    if in_flight < 1:
        raise ThinkerError(f"backend.options.in_flight={in_flight} must be at least 1", "backend.options.in_flight",
                           "use 1 (wait for each step) or more (submit steps ahead; 2 is the default)")


def offered_models(url: str, key: str) -> list[str] | None:
    """The model names the service's capabilities list, or None when it answers without a list (some services
    keep it behind their own auth flow: the training client then reports it). Unreachable: a ThinkerError."""
    import httpx

    try:
        response = httpx.get(f"{url}/api/v1/get_server_capabilities", headers={"X-API-Key": key},
                             timeout=PROBE_TIMEOUT_S)
    except httpx.HTTPError as error:
        raise ThinkerError(
            f"the Tinker service at {url} does not answer ({type(error).__name__})", "backend=tinker",
            "start a local one with `thinker tinker-serve` and export TINKER_BASE_URL=http://127.0.0.1:8000, "
            "or check TINKER_BASE_URL / backend.base_url and your network") from error
    if response.status_code in (401, 403):
        raise ThinkerError(f"the Tinker service at {url} refused the API key (HTTP {response.status_code})",
                           "TINKER_API_KEY", "export a valid key (it is read from the environment only)")
    if response.status_code != 200:
        return None
    try:
        return [m["model_name"] for m in response.json().get("supported_models", []) if m.get("model_name")]
    except (ValueError, AttributeError, TypeError):
        return None


def check_model_offered(base: str, offered: list[str] | None, url: str) -> None:
    if offered is not None and base not in offered:
        raise ThinkerError(
            f"the Tinker service at {url} does not offer base model {base}", "model.tinker_name / model",
            f"pick a model it offers ({', '.join(offered) or 'none listed'}): set model.tinker_name, or start "
            "thinker tinker-serve --models <model option>")
