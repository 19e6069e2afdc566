"""Hosted fine-tuning providers (backend=provider): one adapter module per provider, one flow for all.

- adapter.py: the adapter contract (capabilities, validate, translate, start, status) and its types
  (docs/decisions/0003-universal-job-configuration.md);
- capabilities.py: what a provider supports and what validation finds (the types adapter and checks share);
- checks.py: the checks every provider shares, driven by its capabilities;
- sdk_adapter.py: the plumbing of the providers reached through a Stainless-generated SDK (client and key
  check, call errors, the create POST, chat), so a provider module keeps only what is its own;
- job_fields.py: what every provider reads the same way (base model, examples per step, W&B settings under its
  own names, fingerprint tags, timestamps, step metrics, its state table's live states);
- upload_format.py: our data as the provider's upload file (chat messages JSONL), checked against its limits;
- flow.py: validate -> convert -> upload -> reattach or create -> poll -> mirror into MLflow -> result;
- jobs_ledger.py: the jobs this project started (`thinker jobs`);
- together.py, fireworks.py, openai.py: live providers through their official SDKs;
- retired.py: providers that run no fine-tuning jobs (Mistral: deprecated; DeepSeek: no public API).

`conf/provider/<name>.yaml` names its adapter in `_target_`; `adapter_for(cfg)` builds it. Nothing here imports a
provider SDK at import time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omegaconf import DictConfig

from thinker.errors import ThinkerError

if TYPE_CHECKING:
    from thinker.providers.adapter import ProviderAdapter


def adapter_for(provider_cfg: DictConfig) -> ProviderAdapter:
    """The adapter `cfg.provider` names (its `_target_` class, built with its keys)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from thinker.providers.adapter import ProviderAdapter

    name = provider_cfg.get("name")
    if not provider_cfg.get("_target_"):
        raise ThinkerError(f"provider={name} names no adapter", f"conf/provider/{name}.yaml",
                           "set _target_ to a thinker.providers adapter class")
    try:
        adapter = instantiate(provider_cfg, _convert_="all", job=None)  # the job is read by job_configuration()
    except InstantiationException as error:
        raise ThinkerError(f"provider={name} cannot be built from its config ({error.__cause__ or error})",
                           f"provider._target_={provider_cfg.get('_target_')}",
                           "fix conf/provider/<name>.yaml: _target_ must name a ProviderAdapter class") from error
    if not isinstance(adapter, ProviderAdapter):
        raise ThinkerError(f"provider._target_={provider_cfg.get('_target_')} is not a ProviderAdapter",
                           "conf/provider", "point _target_ at a subclass of thinker.providers.adapter.ProviderAdapter")
    return adapter
