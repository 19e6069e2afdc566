"""tinker-cookbook's RL loop (tinker_cookbook.rl.train) against thinker tinker-serve, once per policy loss.

Each run is tiny: `tiny-qwen`, two steps of two groups of four 8-token answers to a one-line question, with a
reward that varies within a group (so advantages are nonzero and every loss has something to train). The run
must finish, log both steps, and leave a final checkpoint the server lists. `stable_reinforce` goes through
the cookbook's own path for it: sampling clients created with record_stability_info, datums with
provenance. Same offline set-up and install as tests/test_tinker_cookbook.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Sequence

import pytest

tinker = pytest.importorskip("tinker")
pytest.importorskip(
    "tinker_cookbook",
    reason="tinker-cookbook is not installed (pip install -c requirements/lock.txt --no-deps tinker-cookbook)",
)
pytest.importorskip(
    "tinker_cookbook.rl.train",
    reason="tinker-cookbook is installed without its runtime imports for the RL loop "
           '(pip install -c requirements/lock.txt -e ".[dev]")',
)
import chz  # noqa: E402
from tinker_cookbook import checkpoint_utils, renderers, tokenizer_utils  # noqa: E402
from tinker_cookbook.rl import train  # noqa: E402
from tinker_cookbook.rl.problem_env import ProblemEnv, ProblemGroupBuilder  # noqa: E402
from tinker_cookbook.rl.types import EnvGroupBuilder, RLDataset, RLDatasetBuilder  # noqa: E402

pytestmark = pytest.mark.slow

KEY = "tml-test"
MODEL = "tiny-qwen"
RENDERER = "role_colon"  # "User: ...\n\nAssistant: ...": needs only encode/decode, no model-specific tokens
STEPS, GROUPS, GROUP_SIZE, MAX_TOKENS = 2, 2, 4, 8


class EvenLengthEnv(ProblemEnv):
    """Rewards an answer whose text has an even length: a coin flip for an untrained model, so the rewards of
    a group differ and the advantages are not all zero."""

    def __init__(self, renderer: renderers.Renderer, question: str):
        super().__init__(renderer, format_coef=0.0, require_stop_sequence_for_format=False)
        self.question = question

    def get_question(self) -> str:
        return self.question

    def check_answer(self, sample_str: str) -> bool:
        return len(sample_str) % 2 == 0

    def check_format(self, sample_str: str) -> bool:
        return True

    def get_reference_answer(self) -> str:
        return "any even-length text"


class Questions(RLDataset):
    def __init__(self, renderer: renderers.Renderer):
        self.renderer = renderer

    def get_batch(self, index: int) -> Sequence[EnvGroupBuilder]:
        return [ProblemGroupBuilder(env_thunk=lambda q=f"Name a color ({index}.{g}).": EvenLengthEnv(self.renderer, q),
                                    num_envs=GROUP_SIZE) for g in range(GROUPS)]

    def __len__(self) -> int:
        return STEPS


@chz.chz
class QuestionsBuilder(RLDatasetBuilder):
    async def __call__(self) -> tuple[RLDataset, RLDataset | None]:
        tokenizer = tokenizer_utils.get_tokenizer(MODEL)
        return Questions(renderers.get_renderer(RENDERER, tokenizer)), None


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


@pytest.mark.parametrize("loss_fn", ["cispo", "gspo", "dro", "stable_reinforce"])
def test_cookbook_rl_training_runs_against_tinker_serve(private_models_dir, tmp_path, monkeypatch, request,
                                                        keep_root_logging, loss_fn):
    from thinker.tinker_serve.server import start_in_thread

    log_path = tmp_path / "run"
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(train, "fetch_model_pricing", lambda *args, **kwargs: None)  # offline: no pricing file

    with start_in_thread(MODEL, tmp_path / "state") as server:
        monkeypatch.setenv("TINKER_BASE_URL", server.base_url)
        monkeypatch.setenv("TINKER_API_KEY", KEY)
        service = tinker.ServiceClient(base_url=server.base_url, api_key=KEY)
        tokenizer = service.create_lora_training_client(base_model=MODEL, rank=8).result(timeout=60).get_tokenizer()
        tokenizer_utils.register_tokenizer(MODEL, lambda: tokenizer)
        request.addfinalizer(lambda: tokenizer_utils.unregister_tokenizer(MODEL))

        config = train.Config(
            log_path=str(log_path),
            model_name=MODEL,
            recipe_name="thinker_test",
            renderer_name=RENDERER,
            dataset_builder=QuestionsBuilder(),
            learning_rate=1e-3,
            max_tokens=MAX_TOKENS,
            loss_fn=loss_fn,
            lora_rank=8,
            eval_every=0,
            save_every=0,  # only the final checkpoint
            num_groups_to_log=0,
            ttl_seconds=None,
        )
        asyncio.run(train.main(config))

        metrics = [json.loads(line) for line in (log_path / "metrics.jsonl").read_text().splitlines()]
        trained = [m for m in metrics if "env/all/reward/total" in m]  # the last line holds token totals only
        assert [m["step"] for m in trained] == list(range(STEPS)), metrics
        assert all(math.isfinite(m["env/all/reward/total"]) and m["tokens/trained"] > 0 for m in trained), trained
        records = checkpoint_utils.load_checkpoints_file(str(log_path))
        assert [r.name for r in records] == ["final"], records
        rest = tinker.RestClient(base_url=server.base_url, api_key=KEY)
        run = rest.get_training_run_by_tinker_path(records[0].state_path).result(timeout=30)
        listed = {c.tinker_path for c in rest.list_checkpoints(run.training_run_id).result(timeout=30).checkpoints}
        assert records[0].state_path in listed, listed
        if loss_fn == "stable_reinforce":  # the cookbook sampled with record_stability_info: the server kept them
            assert server.service.stability._records, "no sequence was recorded"
        service.close("success").result(timeout=30)
