"""objective=grpo: rewards as config, group advantages, the KL penalty, the local step's loss against a direct
computation for each loss, and the sampler-vs-trainer log-prob gap at step 0 (docs/objectives.md,
"Reinforcement learning"). Fast: the step runs on the builtin tiny model in memory."""

from __future__ import annotations

import math

import pytest
from conftest import compose

from thinker.config import rules
from thinker.data.examples import Example
from thinker.errors import ThinkerError
from thinker.rewards import builtin
from thinker.rewards.advantages import group_advantages, kl_penalised
from thinker.rewards.spec import build_rewards, reward_specs, score

# ---------------------------------------------------------------- rewards


def test_shipped_rewards_score_what_they_say():
    gsm = Example("What is 2+3?", "2 + 3 = 5\n#### 5")
    assert builtin.gsm8k_answer("", "so 5\n#### 5", gsm) == 1.0
    assert builtin.gsm8k_answer("", "#### 6", gsm) == 0.0
    assert builtin.gsm8k_answer("", "the answer is 5", gsm) == 0.0  # no final-answer line
    source = "Hypothesis: Aspirin lowers risk.\n\nDocument 7: T\nAspirin lowers risk in adults."
    assert builtin.claim_format(source, "CLAIM[c1]: Aspirin lowers risk.", None) == 1.0
    assert builtin.claim_format(source, "CLAIM[c1]: Aspirin lowers risk.\nCLAIM[c2] (Document 7): made up", None) == 0.5
    assert builtin.claim_format(source, "Aspirin lowers risk.", None) == 0.0  # no CLAIM[c1] line
    assert builtin.RegexReward(r"^yes\b")("", "yes indeed", None) == 1.0
    assert builtin.RegexReward(r"yes", full=True, miss_score=-1.0)("", "yes indeed", None) == -1.0
    assert builtin.LengthPenalty(free_chars=10, scale_chars=100)("", "x" * 60, None) == pytest.approx(-0.5)
    assert builtin.LengthPenalty(scale_chars=10)("", "x" * 60, None) == -1.0  # bounded by max_penalty


def test_rewards_resolve_from_names_weights_arguments_and_dotted_paths():
    specs = reward_specs(compose(["objective=grpo", "objective.rewards=[gsm8k_answer,{length_penalty:0.1},"
                                  "{regex:{weight:2,pattern:'^A'}},{thinker.rewards.builtin.claim_format:0.5}]"]
                                 ).objective.rewards)
    assert [(s.name, s.weight) for s in specs] == [("gsm8k_answer", 1.0), ("length_penalty", 0.1), ("regex", 2.0),
                                                    ("thinker.rewards.builtin.claim_format", 0.5)]
    assert specs[2].target == "thinker.rewards.builtin.RegexReward" and specs[2].arguments["pattern"] == "^A"
    assert specs[1].arguments["scale_chars"] == 1000  # the option's own arguments
    rewards = build_rewards(specs)
    record = Example("q", "#### 5")
    totals, each = score(rewards, ["q", "q"], ["A\n#### 5", "B"], [record, record])
    assert each["gsm8k_answer"] == [1.0, 0.0] and each["regex"] == [1.0, 0.0]
    assert totals[0] == pytest.approx(1.0 + 0.1 * -len("A\n#### 5") / 1000 + 2.0)
    assert totals[1] == pytest.approx(0.1 * -1 / 1000)


@pytest.mark.parametrize(("rewards", "says"), [
    ("[]", "must list at least one reward"),
    ("[no_such_reward]", "neither a conf/reward option nor a dotted path"),
    ("[{gsm8k_answer:abc}]", "not a number"),
    ("[gsm8k_answer,{gsm8k_answer:2}]", "names a reward twice"),
    ("[nosuchpackage_xyz.rewards.fn]", "package nosuchpackage_xyz is not installed"),
])
def test_a_reward_that_cannot_be_one_is_a_config_error(rewards, says):
    cfg = compose(["objective=grpo", f"objective.rewards={rewards}"])
    problems = [v.what for v in rules.grpo_settings_valid(cfg, {})]
    assert len(problems) == 1 and says in problems[0], problems


def _raises(prompt, completion, record):
    raise KeyError("answer")


def _nan(prompt, completion, record):
    return float("nan")


def test_a_reward_that_raises_is_one_line_naming_it_and_the_record():
    rewards = build_rewards(reward_specs([{"ok": {"_target_": "thinker.rewards.builtin.gsm8k_answer"}},
                                          {"broken": {"_target_": f"{__name__}._raises"}}]))
    with pytest.raises(ThinkerError) as caught:
        score(rewards, ["p", "p"], ["#### 1", "#### 2"], [Example("p", "#### 1"), Example("p2", "#### 3")],
              record_ids=[17, 18])
    line = caught.value.line()
    assert "\n" not in line and "reward 'broken' raised KeyError" in line and "record 17" in line
    assert caught.value.stage == "train"
    rewards = build_rewards(reward_specs([{"nan": {"_target_": f"{__name__}._nan"}}]))
    with pytest.raises(ThinkerError, match="returned nan for record 0"):
        score(rewards, ["p"], ["x"], [Example("p", "x")])


class _Batched:
    batched = True

    def __call__(self, prompts, completions, records):
        return [float(len(c)) for c in completions]


def test_a_batch_reward_scores_every_completion_in_one_call():
    rewards = build_rewards(reward_specs([{"lengths": {"_target_": f"{__name__}._Batched", "weight": 0.5}}]))
    totals, each = score(rewards, ["p"] * 3, ["a", "bb", "ccc"], [None] * 3)
    assert rewards[0].batched and each["lengths"] == [1.0, 2.0, 3.0] and totals == [0.5, 1.0, 1.5]


# ---------------------------------------------------------------- config check


@pytest.mark.parametrize(("overrides", "says"), [
    (["backend=provider", "provider=together"], "cannot run on backend=provider"),
    (["objective.loss=cross_entropy"], "not a policy-gradient loss"),
    (["objective.group_size=1"], "at least 2"),
    (["objective.temperature=0"], "objective.temperature=0"),
    (["method=pretrain", "model=cognate-25m"], "method=pretrain builds one"),
])
def test_grpo_settings_are_checked_at_config_check(overrides, says):
    bad = compose(["objective=grpo", *overrides])
    assert any(says in v.what for v in rules.grpo_settings_valid(bad, {})), says
    assert not list(rules.grpo_settings_valid(compose(["objective=grpo"]), {}))
    assert not list(rules.grpo_settings_valid(compose(["objective=grpo", "backend=tinker", "method=lora"]), {}))


# ---------------------------------------------------------------- advantages and the KL term


def test_group_advantages_are_normalised_within_each_group():
    rewards = [1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5, 3.0, 1.0, 2.0, 2.0]
    got = group_advantages(rewards, 4)
    for start in (0, 4, 8):
        group = rewards[start:start + 4]
        mean = sum(group) / 4
        std = math.sqrt(sum((r - mean) ** 2 for r in group) / 4)
        want = [0.0] * 4 if std == 0 else [(r - mean) / std for r in group]
        assert got[start:start + 4] == pytest.approx(want)
    assert got[4:8] == [0.0] * 4  # equal rewards teach nothing
    assert group_advantages(rewards, 4, scale=False)[:4] == pytest.approx([0.5, -0.5, -0.5, 0.5])  # centred only
    with pytest.raises(ValueError):
        group_advantages(rewards, 5)


def test_the_kl_penalty_is_tinker_cookbooks():
    sampler = [[-1.0, -2.0], [-0.5]]
    reference = [[-1.5, -1.0], [-0.5]]
    advantages = [[1.0, 1.0], [-1.0]]
    penalised, kl = kl_penalised(advantages, sampler, reference, 0.1)
    diffs = [0.5, -1.0, 0.0]
    mean = sum(diffs) / 3
    assert kl == pytest.approx(mean)
    assert penalised == [pytest.approx([1.0 + 0.1 * (mean - 0.5), 1.0 + 0.1 * (mean + 1.0)]),
                         pytest.approx([-1.0 + 0.1 * mean])]
    assert kl_penalised(advantages, sampler, reference, 0.0)[0] == advantages


# ---------------------------------------------------------------- the local step


@pytest.fixture(scope="module")
def tiny():
    import torch

    from thinker.backends.local.training_model import apply_method
    from thinker.models.loading import load_causal_lm, load_tokenizer, resolve_model_path
    from thinker.paths import resolve_input

    cfg = compose(["objective=grpo"])
    path = resolve_model_path(cfg.model, int(cfg.seed), [resolve_input(p) for p in cfg.model.tokenizer_corpus])
    tokenizer = load_tokenizer(path)
    torch.manual_seed(0)
    model = apply_method(load_causal_lm(path, method="lora", quant=None, dtype="fp32"), cfg.method, False)
    return model, tokenizer


PROMPTS = ["Hypothesis: Aspirin lowers risk.\n\n", "Hypothesis: Exercise helps sleep.\n\n"]


def _step(tiny, loss, **objective):
    import torch

    from thinker.backends.local.grpo_module import Reference, grpo_step
    from thinker.models import rl_losses

    model, tokenizer = tiny
    cfg = compose(["objective=grpo", f"objective.loss={loss}", "objective.max_new_tokens=12",
                   *[f"objective.{k}={v}" for k, v in objective.items()]])
    rewards = build_rewards(reward_specs([{"length_penalty": {"weight": 1.0, "scale_chars": 40}}]))
    torch.manual_seed(3)
    records = [Example(p, "") for p in PROMPTS]
    result = grpo_step(model, tokenizer, PROMPTS, records, [0, 1], rewards, cfg.objective,
                       rl_losses.check_config(loss, {}), Reference(model, needs_copy=False))
    return result


def test_sampler_and_trainer_log_probs_agree_at_step_zero(tiny):
    result = _step(tiny, "importance_sampling")
    assert result.metrics["sampled_tokens"] > 0
    assert abs(result.metrics["kl/sample_train"]) < 1e-3
    assert result.metrics["kl/sample_train_max"] < 1e-3  # every token, not only on average
    assert abs(result.metrics["kl/policy_ref"]) < 1e-6  # LoRA starts as the base (B = 0)
    assert len(result.table) == len(PROMPTS) * 4


def _direct(loss, lp, q, adv, mask):
    """Tinker's loss definitions written out token by token (docs: tinker's losses; clip 0.8 / 1.2, dro beta 0.05)."""
    import torch

    ratio = torch.exp(lp - q)
    if loss == "importance_sampling":
        per = -(ratio * adv)
    elif loss == "ppo":
        per = -torch.minimum(ratio * adv, ratio.clamp(0.8, 1.2) * adv)
    elif loss == "cispo":
        per = -(ratio.clamp(0.8, 1.2).detach() * lp * adv)
    elif loss == "dro":
        per = -(lp * adv - 0.5 * 0.05 * (lp - q) ** 2)
    else:  # gspo: the sequence's geometric-mean ratio, differentiated through each token's own log p
        seq = torch.exp(((lp.detach() - q) * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True))
        s = seq * torch.exp(lp - lp.detach())
        per = -torch.minimum(s * adv, s.clamp(0.8, 1.2) * adv)
    return (per * mask).sum()


@pytest.mark.parametrize("loss", ["importance_sampling", "ppo", "cispo", "gspo", "dro"])
def test_the_step_loss_is_the_named_loss_summed_over_sampled_tokens(tiny, loss):
    """The step's loss and its gradient equal the loss written out directly on the step's own rollout."""
    import torch

    from thinker.backends.local.rollout import completion_logprobs

    model, _ = tiny
    result = _step(tiny, loss, kl_coef=0.5)
    rollout, adv = result.rollout, result.token_advantages
    mask = rollout.completion_mask.float()
    rewards = [r["reward"] for r in result.table]
    # the group-normalised advantages, shifted per token by the KL term (kl/policy_ref is 0 at the start)
    per_completion = torch.tensor(group_advantages(rewards, 4)).unsqueeze(-1) * mask
    assert torch.allclose(adv, per_completion, atol=1e-5)
    assert adv.abs().sum() > 0, "the rewards differ within a group, so something is learnt"
    model.zero_grad(set_to_none=True)
    result.loss.backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    lp, _ = completion_logprobs(model, rollout)
    direct = _direct(loss, lp, rollout.sampler_logprobs, adv, mask)
    direct.backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    assert float(result.loss.detach()) == pytest.approx(float(direct.detach()), rel=1e-4, abs=1e-4)
    assert got.keys() == want.keys() and got
    for name in got:
        assert torch.allclose(got[name], want[name], rtol=1e-3, atol=1e-6), name


def test_sampler_and_trainer_log_probs_agree_at_step_zero_on_tinker_serve(tmp_path):
    """backend=tinker's Datums (thinker.backends.tinker.grpo.completion_datum) put each sampled token where the
    trainer scores it: tinker-serve's forward pass over the Datum gives the sampler's log-probs back."""
    import tinker
    from tinker import types

    from thinker.backends.tinker.datums import output_logprobs
    from thinker.backends.tinker.grpo import completion_datum
    from thinker.tinker_serve.server import start_in_thread

    with start_in_thread("tiny-qwen", tmp_path) as server:
        service = tinker.ServiceClient(base_url=server.base_url, api_key="tml-local")
        client = service.create_lora_training_client(base_model="tiny-qwen", rank=8, seed=42,
                                                     train_unembed=True).result()
        tokenizer = client.get_tokenizer()
        sampler = client.save_weights_and_get_sampling_client(name="step0").result()
        prompt = tokenizer(PROMPTS[0], add_special_tokens=False)["input_ids"]
        sample = sampler.sample(prompt=types.ModelInput.from_ints(prompt), num_samples=4,
                                sampling_params=types.SamplingParams(max_tokens=12, temperature=1.0, seed=7)).result()
        sequences = sample.sequences
        datums = [completion_datum(prompt, list(s.tokens), list(s.logprobs), [1.0] * len(s.tokens), "ppo")
                  for s in sequences]
        trained = output_logprobs(client.forward(datums, "ppo").result())
    gaps = [q - p for s, lp in zip(sequences, trained, strict=True)
            for q, p in zip(s.logprobs, lp[len(prompt) - 1:], strict=True)]
    assert len(gaps) == sum(len(s.tokens) for s in sequences) > 0
    assert abs(sum(gaps) / len(gaps)) < 1e-3 and max(abs(g) for g in gaps) < 1e-3


def test_a_step_is_grad_accum_micro_batches_of_batch_size_prompts(tmp_path):
    """trainer.grad_accum micro-batches of trainer.batch_size prompts make one optimizer step on backend=local
    (backend=tinker sends the same prompts in one forward_backward): the step's table holds every completion
    of its micro-batches, and its reward is their mean."""
    import json

    from thinker.backends.local.grpo import train_grpo

    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Say {w}", "completion": "-"}) + "\n"
                            for w in "one two three four five six seven eight nine ten".split()))
    cfg = compose(["objective=grpo", "data=jsonl", f"data.path={data}", "data.validation_split=0", "logger=none",
                   "callbacks=none", "objective.rewards=[{length_penalty:{scale_chars:10}}]", "objective.group_size=2",
                   "objective.max_new_tokens=4", "objective.table_every=1", "trainer.batch_size=2",
                   "trainer.grad_accum=2", "trainer.max_steps=2", "trainer.evaluations=1", "method=lora"])
    report = train_grpo(cfg, tmp_path / "run")
    assert report.metrics["optimizer_steps"] == 2
    tables = [json.loads((tmp_path / "run" / "rl_samples" / f"step_00000{s}.json").read_text()) for s in (1, 2)]
    for table, step in zip(tables, report.extra["grpo_history"], strict=True):
        assert len(table["data"]) == 2 * 2 * 2  # grad_accum x batch_size prompts x group_size completions
        rewards = [row[table["columns"].index("reward")] for row in table["data"]]
        assert step["reward/mean"] == pytest.approx(sum(rewards) / len(rewards))
    prompts = {row[0] for table in tables for row in table["data"]}
    assert len(prompts) == 8  # four different prompts a step, none repeated
