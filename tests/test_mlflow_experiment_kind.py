"""MLflow's UI opens thinker's experiment on its runs: the experiment is tagged as model training
(mlflow.experimentKind = custom_model_development, the "Machine learning" kind of MLflow 3's UI)."""

from __future__ import annotations

import re
from pathlib import Path

import mlflow

from thinker.tracking.mlflow_run import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, MlflowSession, get_client


def test_the_kind_is_one_mlflow_ui_knows_as_machine_learning():
    ui = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    bundle = "\n".join(p.read_text(errors="replace") for p in ui.glob("main.*.js"))
    assert re.search(r'CUSTOM_MODEL_DEVELOPMENT="custom_model_development"', bundle)
    assert EXPERIMENT_KIND == "custom_model_development" and EXPERIMENT_KIND_TAG in bundle


def test_a_new_experiment_and_an_old_untagged_one_are_tagged(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    session = MlflowSession(uri, "fresh", None)
    session.end("FINISHED")
    client = get_client(uri)
    assert client.get_experiment_by_name("fresh").tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND

    old = client.create_experiment("older")  # made by an earlier thinker, without the tag
    MlflowSession(uri, "older", None).end("FINISHED")
    assert client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND

    chosen = client.create_experiment("chosen", tags={EXPERIMENT_KIND_TAG: "finetuning"})
    MlflowSession(uri, "chosen", None).end("FINISHED")
    assert client.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "finetuning"  # a user's choice stays
