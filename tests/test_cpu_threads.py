"""OpenMP threads sleep rather than spin while they wait (thinker/__init__.py): shared cores stay usable."""

from __future__ import annotations

import subprocess
import sys

from conftest import clean_env

PROBE = "import thinker, os; print(os.environ.get('OMP_WAIT_POLICY'))"


def wait_policy_seen(**env: str) -> str:
    base = {k: v for k, v in clean_env().items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**base, **env}, capture_output=True, text=True,
                         check=True)
    return out.stdout.strip()


def test_importing_thinker_makes_openmp_wait_passively_unless_the_user_chose():
    assert wait_policy_seen() == "PASSIVE"
    assert wait_policy_seen(OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"

