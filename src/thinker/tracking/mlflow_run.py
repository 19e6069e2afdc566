"""MLflow for a Thinker run: where runs go, one run per job, params, tags, dataset input, artifacts.

Default store: a SQLite file in the working directory (sqlite:///mlflow.db) with artifacts under
./mlartifacts; $MLFLOW_TRACKING_URI or logger.tracking_uri override it. mlflow is imported lazily.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from thinker.tracking.secrets import mask

log = logging.getLogger("thinker")

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
ARTIFACT_ROOT = "mlartifacts"
_MAX_PARAM_CHARS = 6000  # MLflow's limit on one param value


def tracking_uri(configured: str | None) -> str:
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


# config keys that describe validation, not the experiment: kept in the config artifact, not as params
PARAMS_LEFT_OUT = ("data.schema",)


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """Nested config -> {"optimizer.lr": "0.0002", ...}, secrets masked, values cut to MLflow's limit."""
    out: dict[str, str] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
    elif isinstance(data, list) and any(isinstance(v, dict | list) for v in data):
        for i, value in enumerate(data):
            out.update(flatten(value, f"{prefix}{i}."))
    else:
        key = prefix[:-1]
        out[key] = str(data)[:_MAX_PARAM_CHARS]
    return mask(out)  # a dotted key names a credential as its last part does (provider.options.token)


STORE_LOCK_SUFFIX = ".lock"  # mlflow.db -> mlflow.db.lock, beside it
STORE_LOCK_TIMEOUT_S = 600.0  # creating or migrating a store takes seconds; this long means a stuck process


def sqlite_file(uri: str) -> Path | None:
    """The database file of a `sqlite:///` tracking URI (a relative path is relative to the working directory,
    as SQLAlchemy reads it); None for every other store and for an in-memory database."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Hold an inter-process lock on a local SQLite tracking store (`<db file>.lock` beside it); nothing for
    other stores (a tracking server or a database server serialises its own schema changes).

    MLflow creates and migrates a SQLite store's schema when a process first opens it, without a lock, so
    two jobs of a parallel sweep opening a fresh (or older) mlflow.db at once break each other's migration
    (`table latest_metrics already exists`, `duplicate column name: step`). Never nest two store_lock calls
    for the same store in one thread: flock locks are per open file, so the inner one would wait forever."""
    db = sqlite_file(uri)
    if db is None:
        yield
        return
    from thinker.tracking.atomic import exclusive_lock

    with exclusive_lock(f"{db}{STORE_LOCK_SUFFIX}", STORE_LOCK_TIMEOUT_S, what=f"the MLflow store {db}"):
        yield


def get_client(uri: str):
    """An MlflowClient whose store exists with MLflow's current schema. Opening the store creates or
    migrates that schema, which for SQLite happens under store_lock, so parallel jobs never race on it. A damaged
    SQLite store is named first (thinker.tracking.store_check): an error line, or a warning for damaged pages."""
    from mlflow.tracking import MlflowClient

    from thinker.tracking.store_check import check_sqlite_store

    db = sqlite_file(uri)
    with store_lock(uri):
        if db is not None:
            check_sqlite_store(db)
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)  # opens the store (schema creation/migration) while locked
    return client


# MLflow 3's UI opens an experiment by its kind: untagged, it may land on the GenAI "first trace" page;
# custom_model_development ("Machine learning" in its experiment settings) opens on the runs table
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def tag_experiment_kind(client, experiment: Any) -> None:
    """Tag an experiment thinker's runs live in as model training, unless someone chose its kind already."""
    if (experiment.tags or {}).get(EXPERIMENT_KIND_TAG) is None:
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)


def ensure_experiment(client, name: str) -> str:
    """The id of experiment `name`, created if missing. Get-or-create runs under store_lock (SQLite); with any
    other store a job that loses the race to create it reads the winner's (MLflow says it already exists)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        tag_experiment_kind(client, found)  # one made before the tag existed
        return found.experiment_id
    location = Path(ARTIFACT_ROOT).resolve().as_uri()
    with store_lock(str(client.tracking_uri)):
        found = client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return client.create_experiment(name, artifact_location=location,
                                            tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except Exception:  # noqa: BLE001 - another process (another machine's job) created it first
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id


def log_params(client, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in sorted(params.items())]
    for i in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch
        client.log_batch(run_id, params=items[i : i + 100])


def log_dataset(client, run_id: str, path: str, sha256: str | None, name: str, context: str = "train") -> None:
    """Record the training file as an MLflow dataset input carrying its digest."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource
    from mlflow.entities import DatasetInput, InputTag

    source = LocalArtifactDatasetSource(Path(path).resolve().as_uri())
    # MLflow caps a digest at 36 characters; the full SHA256 goes into the run's tags.
    dataset = MetaDataset(source=source, name=name, digest=(sha256 or "unknown")[:16])
    tags = [InputTag(key="mlflow.data.context", value=context)]
    client.log_inputs(run_id, datasets=[DatasetInput(dataset=dataset._to_mlflow_entity(), tags=tags)])


class MlflowSession:
    """One MLflow run for one Thinker job: opened by the first stage that needs it, closed by the pipeline."""

    def __init__(self, uri: str, experiment_name: str, run_name: str | None, resume_run_id: str | None = None):
        self.uri = uri
        self.client = get_client(uri)
        self.experiment_id = ensure_experiment(self.client, experiment_name)
        self.reopened = bool(resume_run_id) and self._reopen(str(resume_run_id))
        if self.reopened:
            self.run_id = str(resume_run_id)
        else:
            run = self.client.create_run(self.experiment_id, run_name=run_name)
            self.run_id = run.info.run_id

    def _reopen(self, run_id: str) -> bool:
        """Set an earlier run back to RUNNING; False when this store does not have it (another tracking URI)."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_run(run_id)
        except MlflowException:
            log.warning("MLflow run %s is not in %s; this job starts a new run", run_id, self.uri)
            return False
        self.client.update_run(run_id, status="RUNNING")
        return True

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in mask(tags).items() if v is not None]
        if items:
            self.client.log_batch(self.run_id, tags=items)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        elif path.exists():
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def end(self, status: str) -> None:
        """status: FINISHED, FAILED or KILLED."""
        self.client.set_terminated(self.run_id, status)
