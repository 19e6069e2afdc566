"""tinker-cookbook's supervised-learning loop (tinker_cookbook.supervised.train) against thinker tinker-serve.

The cookbook is installed with --no-deps (its `tml-renderers` requirement is not on the package index; the
imports its supervised loop needs are in the dev extra); .ci/run and nox install it, and the test skips
without it:

    pip install -c requirements/lock.txt --no-deps tinker-cookbook

Everything stays offline: the tokenizer of `tiny-qwen` is registered with the cookbook from the local folder
the server reports, W&B is off (no wandb_project), and the cookbook's model-pricing download is replaced by
"no pricing", which the cookbook handles by logging token counts only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math

import pytest

tinker = pytest.importorskip("tinker")
pytest.importorskip(
    "tinker_cookbook",
    reason="tinker-cookbook is not installed (pip install -c requirements/lock.txt --no-deps tinker-cookbook)",
)
pytest.importorskip(
    "tinker_cookbook.supervised.train",
    reason="tinker-cookbook is installed without its runtime imports for the supervised loop "
           '(pip install -c requirements/lock.txt -e ".[dev]")',
)
from tinker_cookbook import checkpoint_utils, tokenizer_utils  # noqa: E402
from tinker_cookbook.supervised import train  # noqa: E402
from tinker_cookbook.supervised.data import FromConversationFileBuilder  # noqa: E402
from tinker_cookbook.supervised.types import ChatDatasetBuilderCommonConfig  # noqa: E402

pytestmark = pytest.mark.slow

KEY = "tml-test"
MODEL = "tiny-qwen"
RENDERER = "role_colon"  # "User: ...\n\nAssistant: ...": needs only encode/decode, no model-specific tokens
COLORS = ["red", "blue", "green", "yellow", "black", "white", "orange", "purple"]
THINGS = ["car", "house", "ball", "cup", "shirt", "door", "book", "lamp"]
BATCH, TEST_SIZE = 4, 4


def conversations() -> list[dict]:
    """Short, regular chats: the assistant's answer is a template filled from the question."""
    pairs = [(color, thing) for color in COLORS for thing in THINGS][::2]  # 32
    return [{"messages": [{"role": "user", "content": f"What color is the {thing}?"},
                          {"role": "assistant", "content": f"The {thing} is {color}."}]} for color, thing in pairs]


@pytest.fixture
def keep_root_logging():
    """train.main reconfigures the root logger (it removes every handler, as basicConfig(force=True)); undo it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


def test_cookbook_supervised_training_runs_against_tinker_serve(private_models_dir, tmp_path, monkeypatch, request,
                                                                  keep_root_logging):
    from thinker.tinker_serve.server import start_in_thread

    rows = conversations()
    data_file = tmp_path / "chats.jsonl"
    data_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    log_path = tmp_path / "run"

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # offline: the pricing file is fetched from the hosted docs; None is the cookbook's own "no pricing" path
    monkeypatch.setattr(train, "fetch_model_pricing", lambda *args, **kwargs: None)

    with start_in_thread(MODEL, tmp_path / "state") as server:
        # the cookbook's ServiceClient reads the address and key from the environment (Config.base_url is None)
        monkeypatch.setenv("TINKER_BASE_URL", server.base_url)
        monkeypatch.setenv("TINKER_API_KEY", KEY)
        service = tinker.ServiceClient(base_url=server.base_url, api_key=KEY)
        # TrainingClient.get_tokenizer loads the local folder get_info names (no hub), unlike the cookbook's
        # get_tokenizer("tiny-qwen"), which would ask the hub for that name: register it under the model's name
        tokenizer = service.create_lora_training_client(base_model=MODEL, rank=8).result(timeout=60).get_tokenizer()
        tokenizer_utils.register_tokenizer(MODEL, lambda: tokenizer)
        request.addfinalizer(lambda: tokenizer_utils.unregister_tokenizer(MODEL))

        config = train.Config(
            log_path=str(log_path),
            model_name=MODEL,
            recipe_name="thinker_test",
            renderer_name=RENDERER,
            dataset_builder=FromConversationFileBuilder(
                file_path=str(data_file),
                test_size=TEST_SIZE,  # held out: the cookbook adds its SamplerNLLEvaluator (test/nll)
                common_config=ChatDatasetBuilderCommonConfig(
                    model_name_for_tokenizer=MODEL, renderer_name=RENDERER, max_length=64, batch_size=BATCH),
            ),
            learning_rate=2e-3,
            lr_schedule="constant",
            num_epochs=2,
            lora_rank=8,
            save_every=0,  # only the final checkpoint
            eval_every=7,  # test/nll through a sampling client's compute_logprobs, before steps 0 and 7
            ttl_seconds=None,
        )
        asyncio.run(train.main(config))

        metrics = [json.loads(line) for line in (log_path / "metrics.jsonl").read_text().splitlines()]
        steps = (len(rows) - TEST_SIZE) // BATCH * config.num_epochs  # 7 batches per epoch, 2 epochs
        assert [m["step"] for m in metrics] == list(range(steps))
        assert all(m["num_sequences"] == BATCH and m["learning_rate"] == pytest.approx(config.learning_rate)
                   for m in metrics), metrics
        losses = [m["train_mean_nll"] for m in metrics]
        assert all(math.isfinite(x) and x > 0 for x in losses), losses
        assert losses[-1] < 0.7 * losses[0], losses
        assert [m["step"] for m in metrics if "test/nll" in m] == [0, 7]
        evals = [m["test/nll"] for m in metrics if "test/nll" in m]
        assert all(math.isfinite(x) for x in evals) and evals[1] < evals[0], evals

        records = checkpoint_utils.load_checkpoints_file(str(log_path))
        assert [(r.name, r.epoch) for r in records] == [("final", config.num_epochs)], records
        final = records[0]
        assert final.state_path and final.state_path.startswith("tinker://"), final
        assert final.sampler_path and final.sampler_path.startswith("tinker://"), final
        # the server lists both: the training state (to resume from) and the sampler weights
        rest = tinker.RestClient(base_url=server.base_url, api_key=KEY)
        run = rest.get_training_run_by_tinker_path(final.state_path).result(timeout=30)
        assert run.base_model == MODEL and run.lora_rank == 8
        assert (run.user_metadata or {}).get("renderer_name") == RENDERER  # the cookbook's resume check reads it
        listed = {c.tinker_path for c in rest.list_checkpoints(run.training_run_id).result(timeout=30).checkpoints}
        assert {final.state_path, final.sampler_path} <= listed, listed
        service.close("success").result(timeout=30)
