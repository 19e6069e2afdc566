"""`thinker tinker-serve`: a Tinker-compatible server on this machine (LoRA training and sampling, offline)."""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """\
Serve the tinker SDK's API on this machine: tinker.ServiceClient(base_url=..., api_key="tml-...") then trains
LoRA adapters (forward_backward with every built-in loss of the SDK: cross_entropy, importance_sampling, ppo,
cispo, dro, gspo, stable_reinforce; optim_step with AdamW),
saves and loads checkpoints (kept in --state-dir, so a restarted server loads them) and samples, all with
transformers + peft, the engine of backend=local. Any API key that starts with tml- is accepted unless
THINKER_SERVE_API_KEYS lists the accepted keys (comma-separated)."""

EPILOG = """\
examples:
  thinker tinker-serve                                  # tiny-qwen on http://127.0.0.1:8000
  thinker tinker-serve --models tiny-qwen,qwen-0.5b --port 8001
  TINKER_BASE_URL=http://127.0.0.1:8000 TINKER_API_KEY=tml-local python my_tinker_loop.py"""


def _serve(args: argparse.Namespace) -> int:
    from thinker.tinker_serve.server import ServeOptions, parse_models, serve_forever

    options = ServeOptions(models=parse_models(args.models), state_dir=Path(args.state_dir), host=args.host,
                           port=args.port, device=args.device, dtype=args.dtype)
    return serve_forever(options)


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0-65535, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("tinker-serve", help="serve the Tinker API locally (LoRA training and sampling)",
                                   description=DESCRIPTION, epilog=EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=_port, default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument("--models", default="tiny-qwen", metavar="NAME,...",
                        help="model options to serve, comma-separated (default tiny-qwen; registry models too)")
    parser.add_argument("--state-dir", default="models/tinker-serve", metavar="DIR",
                        help="where training runs and checkpoints are kept (default models/tinker-serve)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="where the models run (default auto: cuda when available)")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default=None,
                        help="weights dtype (default fp32 on cpu, bf16 on cuda)")
    parser.set_defaults(func=_serve)
