"""Launching a run: the Hydra app (`python launch.py`, `thinker run`), its resolvers and run folders,
composition errors folded into one line, and `--help` (docs/architecture.md)."""
