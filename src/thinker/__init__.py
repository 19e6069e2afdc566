"""Thinker: describe an LLM fine-tuning experiment once, run it on any backend, compare in MLflow.

This package root stays import-light on purpose: composing and validating a config must never pull in
torch, transformers, lightning or mlflow. Heavy modules are imported inside the stage that needs them.
"""

__version__ = "0.1.0"
