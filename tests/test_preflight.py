"""Known at config check, not in training (docs/backends/local.md): a CUDA-only setting on a machine without a
CUDA GPU, and a gated hub model without HF_TOKEN (read from a pre-filled local cache, offline)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from conftest import CONF, ROOT, clean_env, compose, launch

from thinker.backends.local.preflight import check_cuda, cuda_visible
from thinker.errors import ExitCode, ThinkerError

NO_GPU = {"CUDA_VISIBLE_DEVICES": ""}


def test_trainer_gpu_without_a_visible_gpu_is_a_config_error(tmp_path):
    with pytest.raises(ThinkerError) as info:
        check_cuda(compose(["trainer=gpu"]), NO_GPU, gpus_dir=tmp_path)
    assert info.value.exit_code == ExitCode.CONFIG and "needs a CUDA GPU" in info.value.line()
    with pytest.raises(ThinkerError, match="FlashAttention"):
        check_cuda(compose(["trainer.optimizations=[flash_attention]"]), NO_GPU, gpus_dir=tmp_path)
    check_cuda(compose(["trainer=cpu"]), NO_GPU, gpus_dir=tmp_path)  # nothing CUDA-only asked for
    check_cuda(compose(["trainer=gpu", "stage=validate"]), NO_GPU, gpus_dir=tmp_path)  # trains nothing


def test_a_gpu_the_driver_shows_counts_unless_cuda_visible_devices_hides_it(tmp_path):
    (tmp_path / "0000:01:00.0").mkdir()  # what /proc/driver/nvidia/gpus holds per GPU
    assert cuda_visible({}, gpus_dir=tmp_path)
    check_cuda(compose(["trainer=gpu"]), {}, gpus_dir=tmp_path)
    assert not cuda_visible({"CUDA_VISIBLE_DEVICES": "-1"}, gpus_dir=tmp_path)


def test_launching_trainer_gpu_without_a_gpu_stops_at_config_check(tmp_path):
    out = launch(["trainer=gpu", "hydra.run.dir=run"], tmp_path, env=clean_env(**NO_GPU), timeout=300)
    assert out.returncode == int(ExitCode.CONFIG), out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("[thinker] error:")]
    assert len(errors) == 1 and "needs a CUDA GPU" in errors[0] and "Traceback" not in out.stderr
    record = json.loads((tmp_path / "run" / "run_record.json").read_text())
    assert set(record["stages"]) <= {"config"}


GATED_CARD = "---\nlicense: llama3.1\nextra_gated_prompt: accept the license\nextra_gated_fields:\n  Name: text\n---\n# Llama\n"
OPEN_CARD = "---\nlicense: apache-2.0\n---\n# Qwen\n"


def prefilled_cache(root, repo_id: str, card: str, weights: bool = False):
    """The Hugging Face cache layout (models--org--name/refs, snapshots/<commit>/...) with a model card."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = root / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "README.md").write_text(card)
    if weights:
        (snapshot / "model.safetensors").write_bytes(b"\0" * 8)
    return root


def config_check(tmp_path, overrides: list[str], **env: str) -> subprocess.CompletedProcess:
    script = textwrap.dedent(f"""
        import os, sys
        import thinker.config.schema
        from hydra import compose, initialize_config_dir
        from thinker.config.check import check_config
        from thinker.errors import ThinkerError
        with initialize_config_dir(config_dir={str(CONF)!r}, version_base="1.3"):
            cfg = compose(config_name="config", overrides={overrides!r})
        try:
            check_config(cfg, env=os.environ)
        except ThinkerError as err:
            print(err.line()); sys.exit(int(err.exit_code))
        print("passed")
        """)
    base = {k: v for k, v in clean_env().items() if not k.startswith("HF_")}
    full_env = {**base, "HF_HUB_OFFLINE": "1", "HF_TOKEN_PATH": str(tmp_path / "no-token"), **env}
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=full_env, capture_output=True, text=True,
                          timeout=300)


def test_a_gated_model_without_hf_token_is_refused_from_the_cached_card(tmp_path):
    cache = prefilled_cache(tmp_path / "hub", "meta-llama/Llama-3.1-8B-Instruct", GATED_CARD)
    out = config_check(tmp_path, ["model=llama-3.1-8b"], HF_HUB_CACHE=str(cache))
    assert out.returncode == int(ExitCode.CONFIG), out.stdout + out.stderr
    assert "is a gated repository on the hub and HF_TOKEN is not set" in out.stdout
    with_token = config_check(tmp_path, ["model=llama-3.1-8b"], HF_HUB_CACHE=str(cache), HF_TOKEN="hf_test_0123456789")
    assert with_token.stdout.strip().endswith("passed"), with_token.stdout + with_token.stderr
    assert "hf_test_0123456789" not in with_token.stdout + with_token.stderr


def test_cached_weights_or_an_open_model_need_no_token(tmp_path):
    gated_here = prefilled_cache(tmp_path / "a", "meta-llama/Llama-3.1-8B-Instruct", GATED_CARD, weights=True)
    assert config_check(tmp_path, ["model=llama-3.1-8b"], HF_HUB_CACHE=str(gated_here)).stdout.strip().endswith("passed")
    open_model = prefilled_cache(tmp_path / "b", "Qwen/Qwen2.5-0.5B-Instruct", OPEN_CARD)
    assert config_check(tmp_path, ["model=qwen-0.5b"], HF_HUB_CACHE=str(open_model)).stdout.strip().endswith("passed")
