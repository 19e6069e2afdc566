"""Training backends: where a run trains, and how its result is sampled for evaluation.

A backend is one config file and one module. `conf/backend/<name>.yaml` names the class in `_target_` and
Hydra instantiates it with that file's keys (the lightning-hydra-template way); nothing else lists backend
names. A backend offers:

- `check(cfg, env)`: what can be known before anything runs (its SDK installed, its code landed); it
  raises a ThinkerError at config check, before the validation gate;
- `train(cfg, run_dir, tracker) -> TrainingReport`: the metrics and a reference to the trained weights, a
  local folder or a remote URI / id (`tinker://...`, a provider's model id);
- `sampler(report, cfg) -> generate(prompts) -> completions`: what evaluation calls, so every backend is
  scored by the same code.

The pipeline, the model registry and the eval stage depend on nothing else. Modules here stay light: the
config check instantiates the backend, and heavy libraries are imported inside train and sampler.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from omegaconf import DictConfig

from thinker.errors import ThinkerError

Generate = Callable[[list[str]], list[str]]


@dataclass(frozen=True)
class WeightsRef:
    """Where trained weights are: a local folder, or a URI / id that only the backend that made it can use."""

    uri: str

    @classmethod
    def local(cls, folder: str | Path) -> WeightsRef:
        return cls(str(Path(folder).resolve()))

    @property
    def is_local(self) -> bool:
        return "://" not in self.uri and not self.uri.startswith("ft:")

    @property
    def path(self) -> Path | None:
        return Path(self.uri) if self.is_local else None


@dataclass
class TrainingReport:
    backend: str
    weights: WeightsRef | None
    metrics: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # JSON-able details for the run record
    # in-memory results for programmatic callers (trained model, tokenizer); never recorded
    objects: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def checkpoint_dir(self) -> Path | None:
        """The local weights folder (None for remote weights)."""
        return self.weights.path if self.weights else None


class Backend:
    """Base class: keeps the backend's config keys; subclasses implement train and sampler."""

    # its sampler also takes a conversation (a list of {"role", "content"} messages) in place of a text and
    # sends it as chat messages (a hosted provider's chat completions): the eval stage's generation check then
    # gives it the conversation training uploaded, less its last reply, not a template rendered here
    samples_conversations: ClassVar[bool] = False

    def __init__(self, name: str, supported_methods: list[str] | None = None,
                 supported_optimizations: list[str] | None = None, api_key_env: str | None = None,
                 base_url: str | None = None, options: dict[str, Any] | None = None, **flags: Any):
        self.name = name
        self.supported_methods = list(supported_methods or [])
        self.supported_optimizations = supported_optimizations
        self.api_key_env = api_key_env
        self.base_url = base_url
        self.options = dict(options or {})  # backend-specific settings (backend.options.<key>)
        self.flags = flags  # runs_here, uses_provider: read by the config rules

    def check(self, cfg: DictConfig, env: Mapping[str, str]) -> None:
        """Raise a ThinkerError for anything knowable before the run starts (default: nothing)."""

    def builds_training_logger(self, cfg: DictConfig) -> bool:
        """Whether train() builds the logger option's Lightning logger itself (a backend that runs here trains
        on the shared Lightning run). Otherwise, with a logger option that is not MLflow (logger=csv), the train
        stage gives train() a tracker that writes its metrics to that logger (thinker.tracking.loggers)."""
        return bool(self.flags.get("runs_here"))

    def train(self, cfg: DictConfig, run_dir: Path, tracker: Any) -> TrainingReport:
        raise NotImplementedError

    def sampler(self, report: TrainingReport, cfg: DictConfig) -> Generate:
        raise NotImplementedError

    def logprob_scorer(self, weights: WeightsRef, cfg: DictConfig) -> Callable[[list[Any]], list[float]] | None:
        """How the eval stage scores preference pairs under `weights` (docs/objectives.md, "Preference
        tuning"): a function from token sequences (thinker.data.tokenize.TokenizedExample) to each one's sum of
        log p(token | before it) over its weighted tokens. None: this backend cannot, and the preference
        metrics are skipped with that reason."""
        return None

    def base_weights(self, cfg: DictConfig) -> WeightsRef | None:
        """The weights a run of `cfg` starts from, for the eval stage's before/after (None: not comparable)."""
        return None

    def eval_skip_reason(self, report: TrainingReport, cfg: DictConfig) -> str | None:
        """Why the report's weights cannot be sampled here without a choice the user has not made (a paid
        deployment); the eval stage is then skipped with this reason. None: they can."""
        return None

    def close(self) -> None:
        """Release what sampler() acquired (a deployment); the eval stage calls it when it is done."""

    def weights_of(self, report: TrainingReport) -> WeightsRef:
        """The report's weights, or a clear error when there are none."""
        if report.weights is None:
            raise ThinkerError("the run produced no weights to evaluate", f"backend={self.name}",
                               "train first (stage=train or stage=run)", stage="eval")
        return report.weights


def instantiate_backend(cfg: DictConfig) -> Backend:
    """The backend object `cfg.backend` describes (its `_target_` class, built with its keys)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        backend = instantiate(cfg.backend, _convert_="all")
    except InstantiationException as error:
        raise ThinkerError(
            f"backend={cfg.backend.get('name')} cannot be built from its config ({error.__cause__ or error})",
            f"backend._target_={cfg.backend.get('_target_')}",
            "fix conf/backend/<name>.yaml: _target_ must name an importable Backend class",
        ) from error
    if not isinstance(backend, Backend):
        raise ThinkerError(f"backend._target_={cfg.backend.get('_target_')} is not a thinker Backend",
                           "conf/backend", "point _target_ at a subclass of thinker.backends.Backend")
    return backend
