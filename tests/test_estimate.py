"""Estimates before the run (docs/costs.md): the tokens a run trains on, counted with the run's own data code
and a transformers-free copy of its tokenizer; time and cost on each backend; budget.max_usd refusing a run or
a whole sweep at config check, before any job starts."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from conftest import CONF, ROOT, clean_env, compose, launch

pytestmark = pytest.mark.usefixtures("private_models_dir")


def full_tokenizer(cfg):
    """The tokenizer training loads (builds the builtin model the first time; keeps its snapshot)."""
    from thinker.models.loading import load_training_tokenizer

    return load_training_tokenizer(cfg)


@pytest.mark.parametrize("overrides", [
    [],                                                    # the quick start: packed rows, max_steps stops mid-epoch
    ["method=lora", "trainer.optimizations=[]"],           # one example a row
    ["trainer.max_steps=50", "trainer.batch_size=3", "trainer.grad_accum=2"],
    ["backend=tinker"],                                     # unpacked rows, the same step order
])
def test_the_light_count_is_the_count_with_the_training_tokenizer(overrides):
    from thinker.data.source import effective_data_path
    from thinker.estimate.cost import estimate_run
    from thinker.estimate.tokens import plan_tokens

    cfg = compose(overrides)
    tokenizer = full_tokenizer(cfg)
    light = estimate_run(cfg)  # the snapshot the load above kept, through `tokenizers` only
    assert light.tokens is not None, light.unknown
    assert light.tokens == plan_tokens(cfg, effective_data_path(cfg, "unused"), tokenizer)
    assert light.tokens.tokens > light.tokens.trained_tokens > 0


def test_estimating_at_config_check_imports_nothing_heavy():
    cfg = compose([])
    full_tokenizer(cfg)  # the snapshot exists, as after any earlier run
    script = textwrap.dedent(
        f"""
        import json, sys
        import thinker.config.schema
        from hydra import compose, initialize_config_dir
        from thinker.estimate.cost import estimate_run
        with initialize_config_dir(config_dir={str(CONF)!r}, version_base="1.3"):
            cfg = compose(config_name="config")
        est = estimate_run(cfg)
        assert est.tokens is not None, est.unknown
        heavy = ["torch", "transformers", "mlflow", "lightning", "peft", "datasets"]
        print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_a_tokenizer_never_loaded_here_leaves_the_count_to_thinker_estimate(tmp_path, monkeypatch):
    from thinker.estimate.cost import estimate_run

    monkeypatch.setenv("THINKER_MODELS_DIR", str(tmp_path))  # no builtin model, no snapshot
    est = estimate_run(compose([]))
    assert est.tokens is None and "built by its first run" in est.unknown
    assert "thinker estimate" in est.line()


def test_local_cost_is_hours_times_the_device_price_and_time_follows_the_configured_rate():
    from thinker.estimate.cost import estimate_run

    cfg = compose(["budget.tokens_per_sec=1000", "budget.device_hour_usd=3.6"])
    full_tokenizer(cfg)
    est = estimate_run(cfg)
    assert est.throughput == "configured"
    assert est.seconds == pytest.approx(est.tokens.tokens / 1000)
    assert est.usd == pytest.approx(est.seconds / 3600 * 3.6)
    free = estimate_run(compose(["budget.tokens_per_sec=1000"]))
    assert free.usd == 0.0 and "own machine" in free.price


def test_measured_throughput_is_used_for_the_same_setup_only(tmp_path, monkeypatch):
    from thinker.estimate.throughput import measured_tokens_per_sec, record_measurement

    monkeypatch.setenv("THINKER_THROUGHPUT_FILE", str(tmp_path / "throughput.jsonl"))
    cfg = compose([])
    record_measurement(cfg, 1000, 4.0)
    record_measurement(cfg, 3000, 4.0)
    assert measured_tokens_per_sec(cfg) == pytest.approx(4000 / 8.0)
    assert measured_tokens_per_sec(compose(["method=lora"])) is None
    (tmp_path / "throughput.jsonl").open("a").write('{"torn": ')  # a killed writer's last line
    assert measured_tokens_per_sec(cfg) == pytest.approx(500.0)


def test_tinker_is_priced_per_token_with_the_published_price_and_sampling():
    from thinker.estimate.cost import estimate_run
    from thinker.estimate.prices import published_price

    price = published_price("tinker", "Qwen/Qwen3-8B", None, "lora", "sft")
    assert (price.train, price.sample) == (0.40, 0.40) and price.source.startswith("https://")
    cfg = compose(["backend=tinker"])
    full_tokenizer(cfg)
    unpriced = estimate_run(cfg)  # tiny-qwen is no Tinker model: no published price
    assert unpriced.usd is None and "no published price" in unpriced.unknown
    est = estimate_run(compose(["backend=tinker", "budget.train_usd_per_mtok=2", "budget.sample_usd_per_mtok=5"]))
    samples = 8 * 160 * 2  # evaluation.max_samples x max_new_tokens, base and trained
    assert est.usd == pytest.approx(est.tokens.tokens / 1e6 * 2 + samples / 1e6 * 5)


@pytest.mark.parametrize(("provider", "method", "objective", "per_mtok"), [
    ("together", "lora", "sft", 0.48), ("together", "full", "sft", 0.54), ("fireworks", "lora", "sft", 0.50),
])
def test_a_provider_is_priced_by_base_model_size_and_method(provider, method, objective, per_mtok):
    from thinker.estimate.cost import estimate_run

    cfg = compose(["backend=provider", f"provider={provider}", f"method={method}", "provider.base_model=some/model"])
    full_tokenizer(cfg)
    est = estimate_run(cfg)
    assert est.tokens.steps is None  # the provider batches
    assert est.tokens.tokens == int(cfg.trainer.epochs) * (est.tokens.tokens // int(cfg.trainer.epochs))
    assert est.usd == pytest.approx(est.tokens.tokens / 1e6 * per_mtok)


def test_openai_is_priced_by_base_model_id():
    from thinker.estimate.prices import published_price

    assert published_price("openai", "gpt-4o-mini-2024-07-18", None, "full", "sft").train == 3.00
    assert published_price("openai", "an-unlisted-model", None, "full", "sft").train is None


def test_openai_prices_dpo_like_sft_where_it_offers_dpo():
    from thinker.estimate.prices import published_price

    assert published_price("openai", "gpt-4.1-mini-2025-04-14", None, "full", "dpo").train == pytest.approx(
        published_price("openai", "gpt-4.1-mini-2025-04-14", None, "full", "sft").train)
    assert published_price("openai", "gpt-4o-mini-2024-07-18", None, "full", "dpo").train is None  # no DPO offered


def test_a_price_not_read_on_the_providers_page_says_unverified(tmp_path, monkeypatch):
    """conf/prices marks what could not be checked against the provider's own page (docs/costs.md, Prices)."""
    from thinker.estimate.cost import estimate_run
    from thinker.estimate.prices import PRICES_DIR_ENV, published_price

    assert "unverified price" in published_price("together", None, 7_000_000_000, "lora", "sft").describe()
    assert "unverified price" not in published_price("fireworks", None, 7_000_000_000, "lora", "sft").describe()
    assert "unverified price" in published_price("fireworks", None, 7_000_000_000, "lora", "dpo").describe()
    cfg = compose(["backend=provider", "provider=together", "provider.base_model=some/model"])
    full_tokenizer(cfg)
    assert "unverified price" in estimate_run(cfg).line()
    overridden = estimate_run(compose(["backend=provider", "provider=together", "provider.base_model=some/model",
                                       "budget.train_usd_per_mtok=1"]))
    assert "unverified" not in overridden.line()  # the user's own rate
    (tmp_path / "together.yaml").write_text(textwrap.dedent("""\
        source: my contract
        sizes:
          - {max_params: 100_000_000_000, lora: {sft: 0.1}}
    """))
    monkeypatch.setenv(PRICES_DIR_ENV, str(tmp_path))
    own = published_price("together", None, 7_000_000_000, "lora", "sft")
    assert own.train == 0.1 and "unverified" not in own.describe()


def test_thinker_estimate_prints_each_job_and_the_total_as_json(tmp_path):
    env = clean_env()
    out = subprocess.run([sys.executable, "-m", "thinker.commands.cli", "estimate", "--json", "-m",
                          "method=lora,qlora", "budget.device_hour_usd=100", "budget.tokens_per_sec=500"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert [j["overrides"][0] for j in data["jobs"]] == ["method=lora", "method=qlora"]
    usd = [j["usd"] for j in data["jobs"]]
    assert all(u > 0 for u in usd) and data["total"]["usd"] == pytest.approx(sum(usd))
    assert data["jobs"][0]["tokens"]["tokens"] / 500 == pytest.approx(data["jobs"][0]["seconds"])


def test_a_sweep_above_budget_is_refused_before_any_job_starts(tmp_path):
    out = launch(["-m", "method=lora,qlora", "budget.device_hour_usd=100", "budget.max_usd=0.0000001"], tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("[thinker] error:")]
    assert len(errors) == 1 and "above budget.max_usd" in errors[0] and "the sweep (2 jobs)" in errors[0], out.stderr
    assert "Traceback" not in out.stderr
    assert not list(tmp_path.rglob("run_record.json"))  # no job ran
    assert "Launching" not in out.stdout + out.stderr


def test_a_run_above_budget_is_refused_at_config_check(tmp_path):
    out = launch(["budget.device_hour_usd=100", "budget.max_usd=0.0000001"], tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("[thinker] error:")]
    assert len(errors) == 1 and "this run is estimated at $" in errors[0]
    record = json.loads(next(tmp_path.rglob("run_record.json")).read_text())
    assert record["stages"] == {} or "train" not in record["stages"]
    assert record["exit_code"] == 2


@pytest.mark.slow
def test_a_run_trains_exactly_the_estimated_tokens_and_records_its_cost(tmp_path):
    env = clean_env(THINKER_THROUGHPUT_FILE=str(tmp_path / "throughput.jsonl"))
    cfg = compose(["trainer.max_steps=3", "evaluation.enabled=false"])
    full_tokenizer(cfg)
    out = launch(["trainer.max_steps=3", "evaluation.enabled=false", "budget.device_hour_usd=1"], tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    record = json.loads(next(tmp_path.rglob("run_record.json")).read_text())
    estimate, actual = record["cost"]["estimate"], record["cost"]["actual"]
    assert record["metrics"]["trained_tokens"] == estimate["tokens"]["trained_tokens"] == actual["trained_tokens"]
    assert record["metrics"]["optimizer_steps"] == estimate["tokens"]["steps"] == 3
    assert actual["usd"] == pytest.approx(actual["seconds"] / 3600)
    measured = [json.loads(line) for line in (tmp_path / "throughput.jsonl").read_text().splitlines()]
    assert measured[-1]["tokens"] == estimate["tokens"]["tokens"]
    assert "estimate: 3 steps" in out.stdout + out.stderr
    from mlflow.tracking import MlflowClient

    # a client of its own: mlflow.set_tracking_uri would export MLFLOW_TRACKING_URI to every later launch
    metrics = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(record["mlflow_run_id"]).data.metrics
    assert metrics["estimated_trained_tokens"] == metrics["trained_tokens"]
    assert metrics["actual_usd"] == pytest.approx(actual["usd"])


def test_a_big_data_file_is_left_to_thinker_estimate_unless_a_budget_asks(tmp_path, monkeypatch, caplog):
    import logging

    from thinker.estimate import cost

    monkeypatch.setattr(cost, "COUNT_AT_CHECK_BYTES", 10)  # the shipped sample counts as big here
    with caplog.at_level(logging.INFO, logger="thinker"):
        assert cost.estimate_at_config_check(compose([]), tmp_path) is None
    assert "not counted at config check" in caplog.text
    cfg = compose(["budget.max_usd=1000"])
    full_tokenizer(cfg)
    assert cost.estimate_at_config_check(cfg, tmp_path).tokens is not None


def test_data_that_does_not_read_leaves_the_estimate_to_the_validate_stage(tmp_path, caplog):
    """The config check counts tokens before the validate stage has checked the data: a record that is a list
    or lacks its completion is the validate stage's to report (with its line), not a crash of the estimate."""
    import logging

    from thinker.errors import ThinkerError
    from thinker.estimate import cost

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "completion": "CLAIM[c1]: x"}\n[1, 2]\n{"prompt": ""}\n')
    cfg = compose([f"data.path={bad}"])
    full_tokenizer(cfg)  # the tokenizer snapshot the light count needs: without it nothing is counted at all
    with caplog.at_level(logging.WARNING, logger="thinker"):
        assert cost.estimate_at_config_check(cfg, tmp_path) is None
    assert "no estimate: the data could not be counted before validation" in caplog.text
    with pytest.raises(ThinkerError) as refused:
        cost.estimate_at_config_check(compose([f"data.path={bad}", "budget.max_usd=1"]), tmp_path)
    assert refused.value.exit_code == 2 and "thinker validate" in refused.value.line()


def test_a_search_is_estimated_from_what_its_trials_share():
    """An Optuna search's first trial is estimated without the search space on the command line
    (choice(...), interval(...), a,b): Hydra cannot compose those outside its sweeper."""
    from thinker.estimate.sweep import fixed_overrides

    overrides = ["method=lora", "trainer.max_seq_length=choice(32,256)", "optimizer.lr=interval(1e-5,1e-3)",
                 "seed=1,2", "logger=none"]
    assert fixed_overrides(overrides) == ["method=lora", "logger=none"]


def test_data_whose_every_example_is_left_out_plans_no_step():
    """No training row at all (every example longer than trainer.max_seq_length is left out): zero steps,
    not a division by zero at config check; training itself says what is wrong."""
    from thinker.estimate.tokens import stepped_tokens

    assert stepped_tokens([], compose(["trainer.max_steps=5"]), 1) == (0, 0, 0)
