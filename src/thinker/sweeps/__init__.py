"""`-m` sweeps and searches: the plan of a sweep and its jobs, the Hydra callback that writes the sweep summary,
and the Optuna search settings (docs/sweeps.md)."""
