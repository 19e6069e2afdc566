"""backend=tinker: LoRA fine-tuning delegated to the Tinker API through the `tinker` SDK.

backend.py is what the pipeline sees (config check, train, sampler); preflight.py what can be known before
anything runs; datums.py turns the shared training rows into Tinker Datums; ledger.py keeps
checkpoints.jsonl; loop.py is the training loop. `thinker tinker-serve` (thinker.tinker_serve) is a
Tinker-compatible server for running all of it offline.
"""
