"""`thinker tinker-serve`: a local server that speaks the wire protocol of the `tinker` SDK.

Tinker training loops (your own, or tinker-cookbook's) run against it offline, backed by transformers + peft
on this machine: LoRA training with Tinker's losses and AdamW, checkpoints on disk, sampling.

    from thinker.tinker_serve.server import start_in_thread
    with start_in_thread(models=["tiny-qwen"], state_dir=tmp) as server:
        client = tinker.ServiceClient(base_url=server.base_url, api_key="tml-local")

Modules, one job each:
    errors       the errors a request can fail with (user / not found / server)
    wire         protobuf / JSON request decoding and response encoding
    futures      the future registry (long-poll) and the per-model worker that runs requests in seq-id order
    engine       base models, LoRA, Tinker's losses, AdamW
    checkpoints  the state folder: training runs, tinker:// paths, saved weights and optimizer state
    sampling     sampling sessions and generation
    service      the server's state and operations, independent of HTTP
    app          the FastAPI routes and the API-key check
    server       start and stop: in a thread (tests), as a subprocess, or in the foreground (the CLI)

Importing this package is light; torch, transformers, peft and fastapi load in the modules that need them.
"""
