"""backend=provider: what the pipeline sees of a hosted fine-tuning job (thinker.providers).

- check: the provider's capability report and validation (docs/decisions/0003-universal-job-configuration.md), at config check, before the gate and
  before anything is uploaded; a provider that runs no fine-tuning jobs (Mistral, DeepSeek) is refused here;
- train: thinker.providers.flow (upload, reattach or create, poll, mirror into MLflow);
- sampler: the provider's chat completions on the fine-tuned model id (or its base model, for the eval stage's
  before/after), when the result is callable without a paid deployment; otherwise evaluation.provider_deploy.

Weights are `provider://<provider>/<model id>`; the base model is `provider-base://<provider>/<model id>`.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from thinker.backends import Backend, Generate, TrainingReport, WeightsRef
from thinker.errors import ThinkerError
from thinker.errors.wording import with_article

log = logging.getLogger("thinker")

BASE_SCHEME = "provider-base://"


def needs_deployment(adapter: Any, cfg: DictConfig) -> bool:
    """Whether the run's fine-tune can be sampled only from a paid deployment at this provider."""
    return str(cfg.method.name) not in adapter.capabilities().serverless_inference


def adapter_of(cfg: DictConfig) -> Any:
    from thinker.providers import adapter_for

    return adapter_for(cfg.provider)


class ProviderBackend(Backend):
    samples_conversations = True  # chat completions take the messages themselves (adapter.chat)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._deployments: list[tuple[Any, str]] = []

    def check(self, cfg: DictConfig, env: Mapping[str, str]) -> None:
        from thinker.config.job_configuration import job_configuration

        adapter = adapter_of(cfg)
        adapter.refuse_if_unavailable()
        module = adapter.sdk_module()
        if module and importlib.util.find_spec(module) is None:
            raise ThinkerError(f"provider={adapter.name} needs the {module} package, which is not installed",
                               "provider", "pip install -c requirements/lock.txt -e . (it is a dependency)")
        if not cfg.provider.base_model:
            raise ThinkerError(
                f"model={cfg.model.name} has no {adapter.name} model id (model.provider_models.{adapter.name})",
                "provider.base_model", f"set provider.base_model=<{with_article(adapter.name)} model id>, or choose a model "
                "that names one (thinker providers capabilities " + adapter.name + ")")
        if cfg.evaluation.provider_deploy and not cfg.evaluation.enabled:
            log.warning("evaluation.provider_deploy=true does nothing with evaluation.enabled=false")
        job = job_configuration(cfg)
        key_env = adapter.capabilities().integration_keys.get("wandb")
        if job.integrations.wandb.project and key_env and not str(env.get(key_env, "")).strip():
            raise ThinkerError(f"provider.integrations.wandb needs {key_env} in the environment for {adapter.name}",
                               "provider.integrations.wandb", f"export {key_env}=<your W&B key>, or drop the integration")
        findings = adapter.validate(job)
        for finding in findings:
            if not finding.error:
                log.warning("provider=%s: %s", adapter.name, finding.message)
        errors = [f for f in findings if f.error]
        if errors:
            first = errors[0]
            more = f" (and {len(errors) - 1} more: {'; '.join(e.key for e in errors[1:])})" if len(errors) > 1 else ""
            raise ThinkerError(first.message + more, f"provider={adapter.name}, {first.key}", first.fix)

    def train(self, cfg: DictConfig, run_dir: Path, tracker: Any) -> TrainingReport:
        from thinker.providers.flow import train_on_provider

        return train_on_provider(cfg, run_dir, tracker, adapter_of(cfg))

    def eval_skip_reason(self, report: TrainingReport, cfg: DictConfig) -> str | None:
        """Why the trained model cannot be sampled without paying for a deployment (None: it can)."""
        adapter = adapter_of(cfg)
        if not needs_deployment(adapter, cfg) or cfg.evaluation.provider_deploy:
            return None
        return (f"provider={adapter.name} serves method={cfg.method.name} fine-tunes only from a paid deployment; "
                "set evaluation.provider_deploy=true to deploy it for the evaluation (and remove it afterwards)")

    def sampler(self, report: TrainingReport, cfg: DictConfig) -> Generate:
        from thinker.providers.flow import parse_weights

        adapter = adapter_of(cfg)
        uri = self.weights_of(report).uri
        base = uri.startswith(BASE_SCHEME)  # the provider's own model: served as it is
        provider, model = parse_weights(uri, BASE_SCHEME) if base else parse_weights(uri)
        if provider != adapter.name:
            raise ThinkerError(f"{uri} was trained at provider={provider}", f"provider={adapter.name}",
                               f"evaluate it with provider={provider}", stage="eval")
        if not base and cfg.evaluation.provider_deploy and needs_deployment(adapter, cfg):
            deployed = adapter.deploy(model)
            self._deployments.append((adapter, deployed))
            log.info("provider=%s: deployed %s as %s for the evaluation", adapter.name, model, deployed)
            model = deployed
        decoding = OmegaConf.to_container(cfg.evaluation.decoding, resolve=True)
        seed = int(cfg.seed)

        def generate(prompts: list[Any]) -> list[str]:  # texts, or conversations (samples_conversations)
            return adapter.chat(model, prompts, decoding, seed)

        return generate

    def close(self) -> None:
        """Remove the deployments the evaluation made (they cost money while they exist)."""
        while self._deployments:
            adapter, deployed = self._deployments.pop()
            adapter.undeploy(deployed)
            log.info("provider=%s: removed the deployment %s", adapter.name, deployed)

    def base_weights(self, cfg: DictConfig) -> WeightsRef | None:
        from thinker.providers.flow import weights_uri

        if not cfg.provider.base_model:
            return None
        return WeightsRef(weights_uri(str(cfg.provider.name), str(cfg.provider.base_model), BASE_SCHEME))
