"""Thinker: describe an LLM fine-tuning experiment once, run it on any backend, compare in MLflow.

This package root stays import-light on purpose: composing and validating a config must never pull in
torch, transformers, lightning or mlflow. Heavy modules are imported inside the stage that needs them.
"""

import os

__version__ = "0.1.0"

# torch's CPU kernels run on OpenMP threads, which by default spin while they wait for work. Where the cores are
# shared (other processes, CI runners) the spinning threads take the cores from the working ones: the embedded
# default took 288 s on a busy 2-core machine and 85 s with sleeping waits, with the same losses. Set before
# torch loads OpenMP (launch.py and the thinker command import this package first); a value already set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
