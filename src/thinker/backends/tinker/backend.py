"""backend=tinker: what the pipeline sees. Train through the Tinker SDK (thinker.backends.tinker.loop),
sample the result through a SamplingClient, and refuse at config check what Tinker cannot do.

Weights are remote: `tinker://<model>/sampler_weights/final` for a trained run, and `tinker-base://<name>`
for the service's own base model (what the eval stage's before/after compares against).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from thinker.backends import Backend, Generate, TrainingReport, WeightsRef
from thinker.backends.tinker import preflight
from thinker.errors import ThinkerError

BASE_SCHEME = "tinker-base://"
TALKS_TO_SERVICE = ("train", "run", "eval")  # stages that need the service up (validate does not)


class TinkerBackend(Backend):
    def url(self, env: Mapping[str, str] | None = None) -> str:
        return preflight.service_url(self.base_url, os.environ if env is None else env)

    def check(self, cfg: DictConfig, env: Mapping[str, str]) -> None:
        preflight.check_sdk()
        preflight.check_key(str(self.api_key_env), env)
        preflight.check_settings(cfg, self.options)
        key = env.get(str(self.api_key_env), "").strip()
        remote_model = "://" in str(cfg.model.source)
        if remote_model and str(cfg.stage) in ("train", "run"):
            raise ThinkerError(
                f"model={cfg.model.name} is a Tinker fine-tune (its weights are {cfg.model.source}); training on "
                "top of one is not supported yet", "model, backend=tinker",
                "train from its base model (the registry's fine_tuned_from), or sample it with thinker chat / generate")
        if str(cfg.stage) in TALKS_TO_SERVICE and key and not remote_model:
            url = self.url(env)
            preflight.check_model_offered(preflight.tinker_base_name(cfg), preflight.offered_models(url, key), url)

    def train(self, cfg: DictConfig, run_dir: Path, tracker: Any) -> TrainingReport:
        from thinker.backends.tinker.loop import TinkerTrainer

        trainer = TinkerTrainer
        if str(cfg.get("objective", {}).get("name", "sft")) == "dpo":  # docs/objectives.md, "Preference tuning"
            from thinker.backends.tinker.preference import TinkerDpoTrainer

            trainer = TinkerDpoTrainer
        if str(cfg.get("objective", {}).get("name", "sft")) == "grpo":  # docs/objectives.md, "Reinforcement learning"
            from thinker.backends.tinker.grpo import TinkerGrpoTrainer

            trainer = TinkerGrpoTrainer
        return trainer(cfg, run_dir, tracker, self.options, self.url()).train()

    def sampler(self, report: TrainingReport, cfg: DictConfig) -> Generate:
        from tinker import types

        from thinker.backends.tinker.watch import ServiceLost, ServiceWatch

        weights = self.weights_of(report)
        if weights.is_local:
            raise ThinkerError(f"{weights.uri} is a local folder, which backend=tinker cannot sample",
                               "backend=tinker", "evaluate it with backend=local", stage="eval")
        url = self.url()
        watch = ServiceWatch(url)  # the SDK alone waits forever for a service that is gone
        run = report.extra.get("run_dir") or _run_folder(cfg)
        client = self.sampling_client(weights, watch, run)
        tokenizer = sampling_tokenizer(report, cfg, client)
        d = cfg.evaluation.decoding
        params = types.SamplingParams(
            max_tokens=int(d.max_new_tokens), seed=int(cfg.seed),
            temperature=float(d.temperature) if d.do_sample else 0.0, top_p=float(d.top_p) if d.do_sample else 1.0)

        def generate(prompts: list[str]) -> list[str]:
            # every prompt is submitted before the first answer is awaited: the service batches them
            futures = [client.sample(prompt=types.ModelInput.from_ints(tokenizer.encode(p, add_special_tokens=False)),
                                     num_samples=1, sampling_params=params) for p in prompts]
            try:
                return [tokenizer.decode(watch.result(f).sequences[0].tokens, skip_special_tokens=True) for f in futures]
            except ServiceLost:
                raise sampling_lost(url, run) from None

        return generate

    def sampling_client(self, weights: WeightsRef, watch: Any, run: str | None) -> Any:
        """A SamplingClient of the service's base model (tinker-base://) or of saved sampler weights."""
        import tinker

        from thinker.backends.tinker.watch import ServiceLost

        service = tinker.ServiceClient(base_url=self.url())
        try:
            if weights.uri.startswith(BASE_SCHEME):
                return watch.result(service.create_sampling_client(base_model=weights.uri[len(BASE_SCHEME):]))
            return watch.result(service.create_sampling_client(model_path=weights.uri))
        except ServiceLost:
            raise sampling_lost(self.url(), run) from None

    def logprob_scorer(self, weights: WeightsRef, cfg: DictConfig) -> Any:
        """Held-out preference pairs scored by the service (docs/objectives.md, "Preference tuning"): each
        sequence's summed log-probs over its weighted tokens, from SamplingClient.compute_logprobs."""
        from tinker import types

        from thinker.backends.tinker.watch import ServiceLost, ServiceWatch

        if weights.is_local:
            return None
        watch, run = ServiceWatch(self.url()), _run_folder(cfg)
        client = self.sampling_client(weights, watch, run)

        def score(sequences: list[Any]) -> list[float]:
            # all submitted before the first is awaited: the service batches them
            futures = [client.compute_logprobs(types.ModelInput.from_ints(list(seq.input_ids))) for seq in sequences]
            try:
                per_token = [watch.result(f) for f in futures]
            except ServiceLost:
                raise sampling_lost(self.url(), run) from None
            # position t's log-prob is log p(token t | before it); a sequence's weights mark its completion
            return [float(sum(w * lp for w, lp in zip(seq.weights[1:], lps[1:], strict=True) if w))
                    for seq, lps in zip(sequences, per_token, strict=True)]

        return score

    def base_weights(self, cfg: DictConfig) -> WeightsRef:
        return WeightsRef(BASE_SCHEME + preflight.tinker_base_name(cfg))


def sampling_lost(url: str, run: str | None) -> ThinkerError:
    again = f"evaluate again with hydra.run.dir={run} stage=eval" if run else "try again"
    return ThinkerError("the Tinker service stopped answering while sampling", url,
                        f"start the service, then {again}", stage="eval")


def sampling_tokenizer(report: TrainingReport, cfg: DictConfig, client: Any) -> Any:
    """The tokenizer to sample with: the one training used (in memory, or saved in the run folder), else the
    one the SDK finds for the base model's name (a hub id on the Tinker service)."""
    from thinker.backends.tinker.loop import TOKENIZER

    if report.objects.get("tokenizer") is not None:
        return report.objects["tokenizer"]
    runs = [report.extra.get("run_dir"), _run_folder(cfg)]
    folders = [report.extra.get("tokenizer"), *(str(Path(run) / TOKENIZER) for run in runs if run)]
    for folder in filter(None, folders):
        if (Path(folder) / "tokenizer_config.json").is_file():
            from thinker.models.loading import load_tokenizer

            return load_tokenizer(str(folder))
    try:
        return client.get_tokenizer()
    except OSError as error:
        raise ThinkerError(
            f"no tokenizer for {client.get_base_model()}: the service names no Hugging Face tokenizer and no run "
            "folder holds the one training used", "backend=tinker, eval",
            "evaluate in the run folder that trained it (hydra.run.dir=<run> stage=eval)", stage="eval") from error


def _run_folder(cfg: DictConfig) -> str | None:
    try:
        return str(cfg.output.dir) if cfg.output.dir else None
    except Exception:  # noqa: BLE001 - ${hydra:...} outside a Hydra run
        return None
