"""hparams_search=optuna: the objective and direction, the study kept in SQLite and continued by the same
command, and the config check's refusals. Real Hydra multiruns through launch.py, real Optuna, real SQLite."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import pytest
from conftest import ROOT, clean_env, compose, launch

from thinker.config.rules import hparams_search_valid
from thinker.sweeps.plan import objective_of
from thinker.sweeps.search import default_storage, launch_problems, search_problems, study_name

NO_EVAL = ["data.max_examples=24", "trainer.batch_size=4", "trainer.max_steps=2", "trainer.evaluations=2",
           "validation.pytest.enabled=false", "evaluation.enabled=false"]
SEARCH = ["-m", "hparams_search=optuna", "hydra.sweeper.n_trials=3", *NO_EVAL]
SWEPT = ["optimizer.lr", "method.rank", "method.alpha", "method.dropout", "method"]


# ---------------------------------------------------------------- fast: the install


def test_the_sweeper_plugin_is_installed_without_its_optuna_pin_at_the_locked_versions():
    """hydra-optuna-sweeper is not a requirement of the extras (its optuna<3 would come with it), so
    tests/test_lockfile.py does not see it: installed with --no-deps next to the extras' optuna 4."""
    from importlib.metadata import PackageNotFoundError, version

    pins = {}
    for line in (ROOT / "requirements" / "lock.txt").read_text().splitlines():
        name, _, pinned = line.partition("==")
        if pinned and not line.startswith("#"):
            pins[name.lower()] = pinned
    try:
        installed = version("hydra-optuna-sweeper")
    except PackageNotFoundError:
        installed = None
    assert installed == pins["hydra-optuna-sweeper"], (
        "install it with: pip install -c requirements/lock.txt --no-deps hydra-optuna-sweeper")
    assert version("optuna") == pins["optuna"] and int(pins["optuna"].split(".")[0]) >= 4


# ---------------------------------------------------------------- fast: the config check


def problems(overrides: list[str]) -> list[str]:
    return [v.what for v in hparams_search_valid(compose(["hparams_search=optuna", *overrides]), {})]


def test_the_search_preset_passes_the_check_and_without_it_nothing_is_checked():
    assert problems([]) == []
    assert compose().hparams_search is None
    assert search_problems(compose(["trainer.evaluations=0"])) == []  # a plain sweep falls back to train_loss


@pytest.mark.parametrize("overrides", [
    ["hparams_search.objective=c1_exact_match_rate", "hparams_search.direction=maximize"],
    ["hparams_search.objective=train_loss", "trainer.evaluations=0"],
    ["hparams_search.objective=perplexity", "data=jsonl", "data.path=x.jsonl"],
    ["hparams_search.objective=answer_accuracy", "data=gsm8k"],
    ["hparams_search.storage=postgresql://db.example/optuna"],
])
def test_objectives_a_run_reports_are_accepted(overrides):
    assert problems(overrides) == []


@pytest.mark.parametrize(("overrides", "expected"), [
    (["hparams_search.direction=maximise"], "hparams_search.direction=maximise is neither minimize nor maximize"),
    (["hparams_search.objective=accuracy"], "hparams_search.objective=accuracy is not a metric thinker runs report"),
    (["trainer.evaluations=0"], "hparams_search.objective=val_loss is not reported by this run: trainer.evaluations=0"),
    (["hparams_search.objective=c1_exact_match_rate", "stage=train"],
     "hparams_search.objective=c1_exact_match_rate is not reported by this run: stage=train does not evaluate"),
    (["hparams_search.objective=relation_accuracy", "evaluation.enabled=false"],
     "is not reported by this run: evaluation.enabled=false turns evaluation off"),
    (["hparams_search.objective=perplexity"], "hparams_search.objective=perplexity is not a metric"),  # claim data
    (["stage=validate"], "stage=validate trains and evaluates nothing"),
    (["hparams_search.storage=optuna.db"], "hparams_search.storage=optuna.db is not a database URL"),
])
def test_the_check_refuses_what_the_search_cannot_use(overrides, expected):
    found = problems(overrides)
    assert len(found) == 1 and expected in found[0], found


def test_the_refusals_say_where_and_what_to_do():
    cfg = compose(["hparams_search=optuna", "hparams_search.objective=c1_exact_match_rate", "stage=train"])
    (violation,) = hparams_search_valid(cfg, {})
    assert violation.where == "config key hparams_search.objective"
    assert violation.fix.startswith("choose one this run reports (train_loss, val_loss)")


def test_the_launching_process_refuses_a_bad_direction_before_any_study_or_job(tmp_path):
    out = launch(["-m", "hparams_search=optuna", "hparams_search.direction=maximise", *NO_EVAL], cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip().splitlines() == [
        "[thinker] error: hparams_search.direction=maximise is neither minimize nor maximize, config key "
        "hparams_search.direction, pass hparams_search.direction=minimize (lower is better: val_loss) or maximize "
        "(higher is better: an evaluation score such as c1_exact_match_rate)"]
    assert not (tmp_path / "optuna.db").exists() and not glob.glob(str(tmp_path / "multirun" / "*" / "*" / "0"))


def test_a_sweeper_direction_that_disagrees_with_hparams_search_is_refused():
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        agreed = hydra_compose("config", ["hparams_search=optuna", "hparams_search.direction=maximize"],
                               return_hydra_config=True)
        overridden = hydra_compose("config", ["hparams_search=optuna", "hydra.sweeper.direction=maximize"],
                                   return_hydra_config=True)
    assert agreed.hydra.sweeper.direction == "maximize" and launch_problems(agreed) == []
    (what, where, fix) = launch_problems(overridden)[0]
    assert what == "hydra.sweeper.direction=maximize disagrees with hparams_search.direction=minimize"
    assert fix.startswith("set hparams_search.direction=maximize")


# ---------------------------------------------------------------- fast: study name, storage, objective


def test_the_study_name_is_the_same_for_the_same_search_and_differs_for_another():
    params = {"optimizer.lr": "tag(log, interval(1e-5, 1e-3))", "method": "choice(lora, qlora)"}
    name = study_name("val_loss", "minimize", ["a=1", "b=2"], params)
    assert name.startswith("thinker-val_loss-minimize-") and len(name.rsplit("-", 1)[1]) == 8
    assert study_name("val_loss", "minimize", ["b=2", "a=1"], dict(reversed(params.items()))) == name
    assert study_name("val_loss", "minimize", ["a=1", "b=3"], params) != name
    assert study_name("val_loss", "minimize", ["a=1", "b=2"], {"method": "choice(lora)"}) != name
    assert study_name("val_loss", "maximize", ["a=1", "b=2"], params).startswith("thinker-val_loss-maximize-")


def test_the_study_is_stored_beside_mlflows_sqlite_file_unless_told(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert default_storage(None, None, True) == f"sqlite:///{tmp_path / 'optuna.db'}"
    assert default_storage(None, "sqlite:////srv/track/mlflow.db", True) == "sqlite:////srv/track/optuna.db"
    assert default_storage(None, "sqlite:///sub/mlflow.db", True) == f"sqlite:///{tmp_path / 'sub' / 'optuna.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////srv/env/mlflow.db")
    assert default_storage(None, None, True) == "sqlite:////srv/env/optuna.db"
    # a tracking server, or no tracking: the working directory
    assert default_storage(None, "http://mlflow:5000", True) == f"sqlite:///{tmp_path / 'optuna.db'}"
    assert default_storage(None, None, False) == f"sqlite:///{tmp_path / 'optuna.db'}"
    assert default_storage("postgresql://db/optuna", None, True) == "postgresql://db/optuna"


@pytest.mark.parametrize(("logger", "beside_mlflow"), [
    (["logger=mlflow", "logger.name=team-tracker"], True),  # an MLflow logger of another name: its flag counts
    (["logger=csv"], False), (["logger=none"], False)])
def test_the_study_storage_follows_the_logger_options_mlflow_flag(tmp_path, monkeypatch, logger, beside_mlflow):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import thinker.config.schema  # noqa: F401  (registers the structured configs)
    from thinker.sweeps.search import register_resolvers

    register_resolvers()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////srv/track/mlflow.db")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose("config", ["hparams_search=optuna", *logger], return_hydra_config=True)
    folder = "/srv/track" if beside_mlflow else str(tmp_path)
    assert cfg.hydra.sweeper.storage == f"sqlite:///{folder}/optuna.db"


def test_a_named_objective_is_taken_from_the_metrics_and_none_when_missing():
    metrics = {"val_loss": 7.5, "train_loss": 7.9, "c1_exact_match_rate": 0.25}
    assert objective_of(metrics) == ("val_loss", 7.5)
    assert objective_of({"train_loss": 7.9}) == ("train_loss", 7.9)
    assert objective_of(metrics, "c1_exact_match_rate") == ("c1_exact_match_rate", 0.25)
    assert objective_of(metrics, "perplexity") == ("perplexity", None)


# ---------------------------------------------------------------- slow: real searches


def env_for(models: Path) -> dict[str, str]:
    env = clean_env(THINKER_MODELS_DIR=str(models), HF_HUB_OFFLINE="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def sweep_dirs(cwd: Path) -> list[Path]:
    return sorted(Path(p) for p in glob.glob(str(cwd / "multirun" / "*" / "*")))


def records(sweep_dir: Path) -> dict[int, dict]:
    return {int(p.parent.name): json.loads(p.read_text()) for p in sweep_dir.glob("*/run_record.json")}


def job_config(sweep_dir: Path, num: int):
    from omegaconf import OmegaConf

    return OmegaConf.load(sweep_dir / str(num) / ".hydra" / "config.yaml")


def load_study(sweep_dir: Path, storage: str):
    """The sweep's study (its name from the sweep's sweep_run.json), read back from `storage`."""
    import warnings

    import optuna

    from thinker.sweeps.plan import OPTUNA_DEPRECATIONS

    info = json.loads((sweep_dir / "sweep_run.json").read_text())
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=OPTUNA_DEPRECATIONS, category=FutureWarning)
        study = optuna.load_study(study_name=info["study_name"], storage=storage)
        study.trials  # noqa: B018 - the trials' distributions are read here
    return study


def parent_run(cwd: Path, sweep_dir: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("thinker").experiment_id], max_results=100)
    (parent,) = [r for r in runs if r.data.tags.get("sweep_dir") == str(sweep_dir.resolve())
                 and r.data.tags.get("sweep_parent") == "true"]
    return client, parent


def check_trials_are_the_jobs(trials, jobs: dict[int, dict], sweep_dir: Path, objective: str) -> None:
    """Trial i of this sweep is job i: its state, value, and parameters (the job's overrides and composed config)."""
    assert sorted(jobs) == list(range(len(trials)))
    for num, trial in enumerate(trials):
        job = jobs[num]
        assert job["exit_status"] == "succeeded" and trial.state.name == "COMPLETE"
        assert trial.value == pytest.approx(job["metrics"][objective])
        assert set(trial.params) == set(SWEPT)
        composed = job_config(sweep_dir, num)
        assert f"method={trial.params['method']}" in job["overrides"]
        assert str(composed.method.name) == trial.params["method"]  # the method group, chosen by the sweeper
        assert composed.method.rank == trial.params["method.rank"]
        assert composed.optimizer.lr == pytest.approx(trial.params["optimizer.lr"])


@pytest.fixture(scope="module")
def first_search(tmp_path_factory, private_models_dir):
    """A 3-trial search with the default objective (val_loss, minimised), MLflow in the working directory."""
    cwd = tmp_path_factory.mktemp("search")
    out = launch([*SEARCH, "hydra.sweeper.sampler.seed=0"], cwd=cwd, env=env_for(private_models_dir))
    assert out.returncode == 0, out.stderr[-3000:]
    (sweep_dir,) = sweep_dirs(cwd)
    return cwd, out, sweep_dir


@pytest.mark.slow
def test_a_3_trial_search_keeps_its_study_in_sqlite_beside_mlflow_with_the_jobs_objectives(first_search):
    cwd, out, sweep_dir = first_search
    storage = f"sqlite:///{cwd / 'optuna.db'}"
    study = load_study(sweep_dir, storage)
    assert study.study_name.startswith("thinker-val_loss-minimize-") and study.direction.name == "MINIMIZE"
    jobs = records(sweep_dir)
    check_trials_are_the_jobs(study.trials, jobs, sweep_dir, "val_loss")
    assert {t.params["method"] for t in study.trials} == {"lora", "qlora"}  # seed 0 draws both
    for num, job in jobs.items():
        assert f"[sweep] job {num + 1}/3 (#{num}) done: " in out.stdout
        assert f" val_loss {job['metrics']['val_loss']:.4f} (" in out.stdout
    best = min(jobs, key=lambda n: jobs[n]["metrics"]["val_loss"])
    summary = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert summary["objective"] == "val_loss" and summary["direction"] == "minimize"
    assert summary["best"]["job"] == best and study.best_trial.number == best
    assert summary["study"] == {"name": study.study_name, "storage": storage, "direction": "minimize", "trials": 3,
                                "complete": 3, "failed": 0, "best_value": pytest.approx(study.best_value)}
    assert "| job | overrides | val_loss | status |" in (sweep_dir / "sweep_summary.md").read_text()
    client, parent = parent_run(cwd, sweep_dir)
    assert parent.data.tags["optuna_study"] == study.study_name and parent.data.tags["optuna_storage"] == storage
    assert parent.data.tags["sweep_objective"] == "val_loss" and parent.data.tags["best_job"] == str(best)
    assert parent.data.metrics["best_val_loss"] == pytest.approx(jobs[best]["metrics"]["val_loss"])
    assert "FutureWarning" not in out.stderr  # the plugin's use of optuna's deprecated classes stays quiet


@pytest.mark.slow
def test_the_same_command_again_adds_its_trials_to_the_same_study(first_search, private_models_dir):
    cwd, _out, first_dir = first_search
    first = [(t.params, t.value) for t in load_study(first_dir, f"sqlite:///{cwd / 'optuna.db'}").trials]
    # the same command (a sampler seed is a hydra.* setting, outside the study's name: left out, new points)
    out = launch(SEARCH, cwd=cwd, env=env_for(private_models_dir))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Using an existing study" in out.stderr
    (second_dir,) = set(sweep_dirs(cwd)) - {first_dir}
    study = load_study(second_dir, f"sqlite:///{cwd / 'optuna.db'}")
    assert [t.number for t in study.trials] == list(range(6))
    assert [(t.params, t.value) for t in study.trials[:3]] == first
    check_trials_are_the_jobs(study.trials[3:], records(second_dir), second_dir, "val_loss")
    summary = json.loads((second_dir / "sweep_summary.json").read_text())
    assert summary["study"]["trials"] == 6 and summary["study"]["complete"] == 6
    assert summary["study"]["best_value"] == pytest.approx(min(t.value for t in study.trials))
    assert [row["job"] for row in summary["jobs"]] == [0, 1, 2]  # the summary ranks this sweep's jobs


@pytest.mark.slow
def test_a_maximized_evaluation_metric_in_its_own_storage_ranks_the_highest_best(tmp_path, private_models_dir):
    """perplexity: an evaluation score of stage=run on prompt/completion data, maximised (a test of the
    direction, not a sensible goal); the study in the RDB URL hparams_search.storage names."""
    storage = f"sqlite:///{tmp_path / 'studies' / 'search.db'}"
    (tmp_path / "studies").mkdir()
    data = ["data=jsonl", f"data.path={ROOT / 'data' / 'sample' / 'claims.jsonl'}"]
    out = launch(["-m", "hparams_search=optuna", "hydra.sweeper.n_trials=3", "hparams_search.objective=perplexity",
                  "hparams_search.direction=maximize", f"hparams_search.storage={storage}", *data,
                  *(o for o in NO_EVAL if o != "evaluation.enabled=false")],
                 cwd=tmp_path, env=env_for(private_models_dir))
    assert out.returncode == 0, out.stderr[-3000:]
    assert not (tmp_path / "optuna.db").exists()
    (sweep_dir,) = sweep_dirs(tmp_path)
    study = load_study(sweep_dir, storage)
    assert study.study_name.startswith("thinker-perplexity-maximize-") and study.direction.name == "MAXIMIZE"
    jobs = records(sweep_dir)
    check_trials_are_the_jobs(study.trials, jobs, sweep_dir, "perplexity")
    values = {n: job["metrics"]["perplexity"] for n, job in jobs.items()}
    assert len(set(values.values())) == 3  # three different values: the ranking below means something
    best = max(values, key=values.get)
    assert study.best_trial.number == best and study.best_value == pytest.approx(values[best])
    for num, value in values.items():
        assert f"(#{num}) done: " in out.stdout and f" perplexity {value:.4f} (" in out.stdout
    summary = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert summary["objective"] == "perplexity" and summary["direction"] == "maximize"
    assert summary["best"]["job"] == best
    assert [row["objective"] for row in summary["jobs"]] == pytest.approx([values[n] for n in range(3)])
    assert "| job | overrides | perplexity | status |" in (sweep_dir / "sweep_summary.md").read_text()
    client, parent = parent_run(tmp_path, sweep_dir)
    assert parent.data.metrics["best_perplexity"] == pytest.approx(values[best])
    assert parent.data.tags["best_run_id"] == jobs[best]["mlflow_run_id"]
    assert client.get_run(jobs[best]["mlflow_run_id"]).data.tags.get("best") == "true"


@pytest.mark.slow
def test_a_failed_trial_is_failed_in_the_study_and_logger_none_keeps_it_in_the_working_directory(tmp_path,
                                                                                                 private_models_dir):
    out = launch(["-m", "hparams_search=optuna", "hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=0",
                  "hydra.sweeper.params=null", "hydra.sweeper.n_trials=2", "method=lora", "logger=none",
                  "trainer.max_seq_length=choice(32,256)", *NO_EVAL], cwd=tmp_path, env=env_for(private_models_dir))
    assert out.returncode == 4, out.stderr[-3000:]  # the failed trial's stage: training
    (sweep_dir,) = sweep_dirs(tmp_path)
    study = load_study(sweep_dir, f"sqlite:///{tmp_path / 'optuna.db'}")
    jobs = records(sweep_dir)
    # seed 0 draws 256 then 32: the second trial fails (no completion token survives 32 tokens)
    assert [(t.params, t.state.name) for t in study.trials] == [
        ({"trainer.max_seq_length": 256}, "COMPLETE"), ({"trainer.max_seq_length": 32}, "FAIL")]
    assert study.trials[0].value == pytest.approx(jobs[0]["metrics"]["val_loss"]) and study.trials[1].value is None
    assert [jobs[n]["exit_status"] for n in (0, 1)] == ["succeeded", "failed"]
    summary = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert (summary["study"]["complete"], summary["study"]["failed"]) == (1, 1)


@pytest.mark.parametrize(("overrides", "interval"), [
    ([], "interval(0.0003, 0.03)"),  # tiny-qwen's recommended 3e-3 in the middle (a fixed [1e-5, 1e-3] missed it)
    (["model=qwen-0.5b"], "interval(2e-05, 0.002)"),
    (["model.recommended_lr=0.5"], "interval(0.05, 1)"),  # clipped to optimizer.lr's (0, 1]
])
def test_the_lr_search_is_centred_on_the_models_recommended_lr(overrides, interval):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from thinker.sweeps.search import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose("config", ["hparams_search=optuna", *overrides], return_hydra_config=True)
    assert cfg.hydra.sweeper.params["optimizer.lr"] == f"tag(log, {interval})"
