"""backend=provider: a hosted fine-tuning job (thinker.providers) as a training backend."""
