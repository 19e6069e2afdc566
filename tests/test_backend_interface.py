"""The backend interface: a new backend is one config file and one module, its weights may be remote, and the
pipeline, registry and evaluation need nothing else from it.

The echo backend below lives outside the project (a folder on hydra.searchpath and PYTHONPATH), as a user's
own backend would: its "training" returns a remote URI and its sampler answers each claim with its gold
completion, so the scores prove evaluation went through the backend's sampler.
"""

from __future__ import annotations

import json
import os

import pytest
from conftest import clean_env, compose, launch

from thinker.config.check import check_config
from thinker.errors import ExitCode, ThinkerError

ECHO_MODULE = '''
from thinker.backends import Backend, TrainingReport, WeightsRef


class EchoBackend(Backend):
    def train(self, cfg, run_dir, tracker):
        if tracker is not None:
            tracker.log_metrics({"train_loss": 1.5}, step=1)
        return TrainingReport(backend=self.name, weights=WeightsRef(f"echo://{run_dir.name}/final"),
                              metrics={"train_loss": 1.5, "optimizer_steps": 1.0})

    def sampler(self, report, cfg):
        from thinker.data.tokenize import render_prompt
        from thinker.evaluation.samples import load_eval_samples
        from thinker.paths import resolve_input

        assert report.weights.uri.startswith("echo://"), report.weights
        ev = cfg.evaluation
        samples = load_eval_samples(resolve_input(ev.claims_file), resolve_input(ev.corpus_file), None)
        gold = {render_prompt(s.prompt): s.gold_completion for s in samples}
        return lambda prompts: [gold[p] for p in prompts]
'''

ECHO_CONFIG = """# A backend of the user's own: this file and echo_backend.py are all it takes.
defaults:
  - /schema/backend/backend@_here_
  - _self_

_target_: echo_backend.EchoBackend
name: echo
supported_methods: [lora]
"""


@pytest.fixture
def echo(tmp_path):
    (tmp_path / "plugin" / "conf" / "backend").mkdir(parents=True)
    (tmp_path / "plugin" / "conf" / "backend" / "echo.yaml").write_text(ECHO_CONFIG)
    (tmp_path / "plugin" / "echo_backend.py").write_text(ECHO_MODULE)
    pythonpath = os.pathsep.join(p for p in (str(tmp_path / "plugin"), os.environ.get("PYTHONPATH")) if p)
    env = clean_env(THINKER_MODELS_DIR=str(tmp_path / "models"), PYTHONPATH=pythonpath, HF_HUB_OFFLINE="1")
    return env, [f"hydra.searchpath=[file://{tmp_path / 'plugin' / 'conf'}]", "backend=echo", "method=lora",
                 "validation.pytest.enabled=false", "evaluation.max_samples=3", "hydra.run.dir=run"]


@pytest.mark.slow
def test_a_backend_of_ones_own_with_remote_weights_runs_registers_and_is_evaluated(tmp_path, echo):
    env, args = echo
    out = launch(args, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "run_record.json").read_text())
    train = record["stages"]["train"]
    assert train["backend"] == "echo" and train["weights"] == "echo://run/final"
    assert record["stages"]["eval"]["weights"] == "echo://run/final"
    assert record["metrics"]["c1_exact_match_rate"] == 1.0 and record["metrics"]["total"] == 3  # gold echoed

    registry = json.loads((tmp_path / "models" / "registry.json").read_text())
    entry = next(e for e in registry["models"] if e["model_name"] == train["registered_as"])
    assert entry["weights_uri"] == "echo://run/final" and entry["local_path"] is None
    assert entry["fine_tuned_from"] == "tiny-qwen" and entry["mlflow_run_id"] == record["mlflow_run_id"]
    assert entry["extra"]["backend"] == "echo"

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(record["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["weights_uri"] == "echo://run/final"
    assert run.data.metrics["c1_exact_match_rate"] == 1.0

    # stage=eval later: the remote weights named in the folder's record go back through the sampler
    out = launch([*args, "stage=eval", "evaluation.max_samples=2"], cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "run_record.json").read_text())
    assert record["metrics"]["total"] == 2 and record["stages"]["eval"]["weights"] == "echo://run/final"


@pytest.mark.slow
def test_a_method_the_backend_does_not_offer_is_refused_before_the_gate(tmp_path, echo):
    env, args = echo
    out = launch([*[a for a in args if a != "method=lora"], "method=qlora"], cwd=tmp_path, env=env)
    assert out.returncode == 2 and "backend=echo cannot train with method=qlora" in out.stderr
    record = json.loads((tmp_path / "run" / "run_record.json").read_text())
    assert set(record["stages"]) == {"config"}


def test_a_backend_whose_module_is_missing_fails_at_config_check():
    cfg = compose(["backend._target_=not_installed_sdk.Backend"])
    with pytest.raises(ThinkerError) as info:
        check_config(cfg, env={})
    assert info.value.exit_code == ExitCode.CONFIG and "backend._target_=not_installed_sdk.Backend" in str(info.value)


def test_a_backend_that_has_not_landed_says_so_at_config_check():
    cfg = compose(["backend._target_=support.backends.NotLandedBackend"])
    with pytest.raises(ThinkerError) as info:
        check_config(cfg, env={})
    assert info.value.exit_code == ExitCode.NOT_AVAILABLE and "not available yet" in str(info.value)


def test_the_local_backend_refuses_to_sample_remote_weights():
    from thinker.backends import TrainingReport, WeightsRef, instantiate_backend

    cfg = compose()
    backend = instantiate_backend(cfg)
    assert backend.name == "local" and "qlora" in backend.supported_methods
    with pytest.raises(ThinkerError) as info:
        backend.sampler(TrainingReport(backend="tinker", weights=WeightsRef("tinker://run-1/final")), cfg)
    assert "tinker://run-1/final" in str(info.value) and info.value.stage == "eval"


def test_remote_weights_in_the_registry_are_not_loaded_as_a_folder(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from thinker.models.loading import resolve_model_path

    model = OmegaConf.create({"name": "my-remote", "source": "tinker://run-1/final"})
    with pytest.raises(ThinkerError) as info:
        resolve_model_path(model, 0, [])
    assert "remote weights" in str(info.value) and "backend" in info.value.fix
