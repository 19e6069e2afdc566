"""Composing and validating a config must not import torch, transformers, mlflow or lightning."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from conftest import CONF, ROOT

HEAVY = ["torch", "transformers", "mlflow", "lightning", "peft", "bitsandbytes", "datasets", "tinker", "openai",
         "together", "fireworks"]


def test_compose_check_and_validate_stay_light(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "p", "completion": "CLAIM[c1]: x"}\n')
    script = textwrap.dedent(
        f"""
        import json, sys
        import thinker.config.schema
        from hydra import compose, initialize_config_dir
        from thinker.config.check import check_config
        from thinker.tracking.fingerprint import config_fingerprint
        from thinker.validation.dataset import FieldSpec, validate_dataset
        import thinker.run.pipeline, thinker.run.validate, thinker.run.train, thinker.run.evaluate, thinker.backends
        with initialize_config_dir(config_dir={str(CONF)!r}, version_base="1.3"):
            cfg = compose(config_name="config", overrides=["data.path={data}"])
        check_config(cfg, env={{}})
        config_fingerprint(cfg)
        result = validate_dataset({str(data)!r}, FieldSpec.from_config(cfg.data.schema))
        assert result.ok, result.errors
        print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_checking_a_hosted_provider_config_imports_no_sdk():
    """backend=provider's config check (capabilities, seed 004 validation, the universal job configuration)
    imports neither the provider's SDK nor anything heavy: it runs before the gate, on any machine."""
    script = textwrap.dedent(
        f"""
        import json, sys
        import thinker.config.schema
        from hydra import compose, initialize_config_dir
        from thinker.config.check import check_config
        from thinker.config.job_configuration import job_configuration
        from thinker.tracking.fingerprint import config_fingerprint
        with initialize_config_dir(config_dir={str(CONF)!r}, version_base="1.3"):
            cfg = compose(config_name="config", overrides=["backend=provider", "provider=together",
                                                           "provider.base_model=Qwen/Qwen2.5-7B-Instruct"])
        check_config(cfg, env={{"TOGETHER_API_KEY": "tgp-test-key-0123456789"}})
        job_configuration(cfg)
        config_fingerprint(cfg)
        print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
