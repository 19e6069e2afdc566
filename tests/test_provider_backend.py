"""backend=provider's own parts, every provider alike: the universal job configuration in the composed config,
the config-check refusals, the jobs ledger, the `thinker providers` / `thinker jobs` commands, the fingerprint."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT, clean_env, compose, launch

from thinker.config.check import check_config
from thinker.config.job_configuration import job_configuration, job_configuration_dict
from thinker.errors import ExitCode, ThinkerError
from thinker.providers import jobs_ledger

LIVE = ["fireworks", "openai", "together"]
KEYS = {"TOGETHER_API_KEY": "tgp-test-key-0123456789", "OPENAI_API_KEY": "sk-test-key-0123456789",
        "FIREWORKS_API_KEY": "fw-test-key-0123456789", "FIREWORKS_ACCOUNT_ID": "thinker-tests"}
BASE = {"together": "Qwen/Qwen2.5-7B-Instruct", "fireworks": "accounts/fireworks/models/qwen2p5-7b-instruct",
        "openai": "gpt-4.1-mini-2025-04-14"}


def provider_cfg(provider: str, *extra: str):
    return compose(["backend=provider", f"provider={provider}", f"provider.base_model={BASE[provider]}", *extra])


def thinker(*args: str, cwd=ROOT, env=None):
    return subprocess.run([sys.executable, "-m", "thinker.commands.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env=env or clean_env(), timeout=120)


# ---------------------------------------------------------------- the universal job configuration


@pytest.mark.parametrize("provider", LIVE)
def test_cfg_job_shows_the_universal_job_configuration(provider, tmp_path):
    out = launch(["backend=provider", f"provider={provider}", "optimizer.lr=2e-5", "trainer.epochs=2",
                  "--cfg", "job", "--resolve"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    import yaml

    job = yaml.safe_load(out.stdout)["provider"]["job"]
    assert job["optimizer"]["learning_rate"] == 2e-5 and job["schedule"]["epochs"] == 2
    assert set(job) == {"model", "datasets", "method", "objective", "schedule", "optimizer", "optimizations",
                        "output", "seed", "metadata", "integrations", "hardware", "passthrough"}
    assert job["objective"] == {"name": "sft", "beta": None, "loss": None}


def test_the_job_configuration_follows_the_keys_users_set():
    cfg = provider_cfg("together", "method=lora", "method.rank=16", "method.alpha=32", "trainer.batch_size=8",
                       "optimizer.scheduler.type=linear", "output.name=claims-v1", "seed=7")
    job = job_configuration(cfg)
    assert (job.method.type, job.method.lora.rank, job.method.lora.alpha) == ("lora", 16, 32.0)
    assert (job.schedule.batch_size, job.optimizer.scheduler.type, job.output.suffix) == (8, "linear", "claims-v1")
    assert job.model.base_model == BASE["together"] and job.seed == 7
    plain = job_configuration_dict(job)
    assert json.loads(json.dumps(plain)) == plain  # JSON-able, as the run record stores it


def test_full_fine_tuning_has_no_lora_settings():
    job = job_configuration(provider_cfg("together", "method=full"))
    assert job.method.type == "full" and job.method.lora.rank is None


def test_a_provider_picks_a_method_it_supports_unless_the_command_line_names_one():
    assert str(compose(["backend=provider", "provider=together"]).method.name) == "lora"
    assert str(compose(["backend=provider", "provider=openai"]).method.name) == "full"
    assert str(compose(["backend=provider", "provider=fireworks"]).method.name) == "lora"
    assert str(compose(["backend=provider", "provider=together", "method=full"]).method.name) == "full"
    assert str(compose([]).method.name) == "qlora"  # backend=local keeps its own default


# ---------------------------------------------------------------- config check


@pytest.mark.parametrize("provider", LIVE)
def test_qlora_is_refused_by_every_provider(provider):
    with pytest.raises(ThinkerError) as info:
        check_config(provider_cfg(provider, "method=qlora"), env=KEYS)
    assert f"provider={provider}" in info.value.line() and "method=qlora" in info.value.line()
    assert info.value.exit_code == ExitCode.CONFIG


@pytest.mark.parametrize("provider", LIVE)
def test_the_default_config_passes_every_live_providers_check(provider):
    check_config(provider_cfg(provider), env=KEYS)


def test_a_model_without_a_provider_id_needs_provider_base_model():
    cfg = compose(["backend=provider", "provider=together"])  # tiny-qwen: built locally, at no provider
    with pytest.raises(ThinkerError) as info:
        check_config(cfg, env=KEYS)
    assert "provider.base_model" in info.value.line() and "model=tiny-qwen" in info.value.line()


def test_an_unknown_provider_option_is_refused():
    with pytest.raises(ThinkerError) as info:
        check_config(provider_cfg("together", "+provider.options.no_such_knob=1"), env=KEYS)
    assert "provider.options.no_such_knob" in info.value.line()


@pytest.mark.parametrize(("provider", "fact"), [("mistral", "410 Gone"), ("deepseek", "no public fine-tuning API")])
def test_providers_without_fine_tuning_are_refused_at_config_check(provider, fact, tmp_path):
    out = launch(["backend=provider", f"provider={provider}", "hydra.run.dir=run"], cwd=tmp_path)
    assert out.returncode == 2
    errors = [line for line in out.stderr.splitlines() if line.startswith("[thinker] error: ")]
    assert len(errors) == 1 and fact in errors[0] and "provider=together" in errors[0], out.stderr
    record = json.loads((tmp_path / "run" / "run_record.json").read_text())
    assert set(record["stages"]) == {"config"} and not (tmp_path / "run" / "provider").exists()


def test_a_missing_key_fails_before_the_gate_and_is_never_echoed(tmp_path):
    env = clean_env(OPENAI_API_KEY="")
    out = launch(["backend=provider", "provider=together", f"provider.base_model={BASE['together']}",
                  "hydra.run.dir=run"], cwd=tmp_path, env=env)
    assert out.returncode == 2 and "TOGETHER_API_KEY is not set" in out.stderr
    assert "validate" not in json.loads((tmp_path / "run" / "run_record.json").read_text())["stages"]


# ---------------------------------------------------------------- fingerprint


def test_the_fingerprint_tells_hosted_base_models_and_options_apart():
    from thinker.tracking.fingerprint import config_fingerprint, fingerprint_inputs

    one = config_fingerprint(provider_cfg("together"))
    other = config_fingerprint(compose(["backend=provider", "provider=together",
                                        "provider.base_model=meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"]))
    assert one != other
    assert fingerprint_inputs(compose([]))["provider"] == "none"  # other backends' fingerprints are unchanged


# ---------------------------------------------------------------- the jobs ledger and commands


def test_the_ledger_keeps_the_latest_state_and_skips_a_torn_line(tmp_path):
    path = tmp_path / "jobs.jsonl"
    jobs_ledger.append(jobs_ledger.JobEntry("together", "ft-1", "fp1", "run1", "base", "queued"), path)
    jobs_ledger.append(jobs_ledger.JobEntry("together", "ft-1", "fp1", "run1", "base", "succeeded", "m-1"), path)
    jobs_ledger.append(jobs_ledger.JobEntry("openai", "ftjob-2", "fp2", "run2", "gpt", "failed"), path)
    with open(path, "a") as fh:
        fh.write('{"provider": "together", "job_id": "ft-3", "fin')  # a launcher killed mid-write
    entries = jobs_ledger.jobs(path)
    assert [(e.job_id, e.state, e.model_id) for e in entries] == [("ft-1", "succeeded", "m-1"),
                                                                   ("ftjob-2", "failed", None)]
    assert jobs_ledger.find("together", "fp1", path).job_id == "ft-1"
    assert jobs_ledger.find("openai", "fp2", path) is None  # a failed job is never reattached to
    assert jobs_ledger.find("openai", "fp1", path) is None


def test_providers_list_and_capabilities():
    out = thinker("providers", "list")
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line for line in out.stdout.splitlines()[2:]}
    assert set(rows) == {"deepseek", "fireworks", "mistral", "openai", "together"}
    assert rows["mistral"].split()[1] == "no" and rows["together"].split()[1] == "yes"
    caps = json.loads(thinker("providers", "capabilities", "openai", "--json").stdout)
    assert caps["supported_methods"] == ["full"] and caps["available"] is True
    unknown = thinker("providers", "capabilities", "nosuch")
    assert unknown.returncode == 2 and unknown.stderr.startswith("[thinker] error: unknown provider 'nosuch'")


def test_jobs_list_reads_the_ledger_and_status_of_an_unknown_job_says_so(tmp_path):
    env = clean_env(THINKER_JOBS_FILE=str(tmp_path / "jobs.jsonl"))
    assert "no hosted jobs" in thinker("jobs", "list", cwd=tmp_path, env=env).stdout
    jobs_ledger.append(jobs_ledger.JobEntry("together", "ft-abc", "fp", "outputs/x", "base", "running"),
                       tmp_path / "jobs.jsonl")
    listed = thinker("jobs", "list", cwd=tmp_path, env=env)
    assert "ft-abc" in listed.stdout and "running" in listed.stdout
    missing = thinker("jobs", "status", "ft-nope", cwd=tmp_path, env=env)
    assert missing.returncode == 2 and "no job ft-nope was started from this project" in missing.stderr


def test_the_readme_table_is_the_capability_reports():
    out = thinker("providers", "list", "--markdown")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in (ROOT / "docs" / "providers.md").read_text(), (
        "docs/providers.md's provider table differs from `thinker providers list --markdown`; paste its output")
