"""The eval stage's preference metrics (thinker.evaluation.preference): per-token log-prob accuracy and margin
before -> after, the DPO implicit rewards against the base, and the sweep ranking preference runs by
pref_accuracy, maximised, without an hparams_search (thinker.sweeps.search.task_default)."""

from __future__ import annotations

import pytest
from conftest import compose

from thinker.config import rules
from thinker.data.tokenize import TokenizedExample
from thinker.evaluation.preference import PairScores, preference_metrics, reward_metrics, score_pairs
from thinker.sweeps.plan import sweeper_value
from thinker.sweeps.search import objective_setting, search_problems, task_default


def sequence(completion_tokens: int, tag: float) -> TokenizedExample:
    # the first token is never scored; `tag` lets the scorer below tell sequences apart
    n = completion_tokens + 2
    return TokenizedExample([int(tag)] * n, [-100] * n, [0.0, 0.0] + [1.0] * completion_tokens)


def test_accuracy_and_margin_are_per_token_so_length_does_not_decide():
    # pair 1: chosen -10 over 10 tokens (-1/token) beats rejected -4 over 2 (-2/token), though its sum is lower
    scores = PairScores(chosen=[-10.0, -3.0], rejected=[-4.0, -1.0], chosen_tokens=[10, 3], rejected_tokens=[2, 2])
    metrics = preference_metrics(scores)
    assert metrics["pref_accuracy"] == 0.5 and metrics["pref_pairs"] == 2.0
    assert metrics["pref_margin"] == pytest.approx(((-1.0 + 2.0) + (-1.0 + 0.5)) / 2)


def test_rewards_are_the_change_against_the_base_times_beta():
    before = PairScores([-10.0, -10.0], [-10.0, -10.0], [5, 5], [5, 5])
    after = PairScores([-8.0, -12.0], [-11.0, -9.0], [5, 5], [5, 5])  # pair 1 moved towards chosen, pair 2 away
    assert reward_metrics(after, before, beta=0.1) == pytest.approx(
        {"pref_reward_accuracy": 0.5, "pref_reward_margin": 0.1 * ((2.0 + 1.0) + (-2.0 - 1.0)) / 2})


def test_score_pairs_asks_the_scorer_once_in_pair_order():
    calls = []

    def scorer(sequences):
        calls.append(len(sequences))
        return [-float(s.input_ids[0]) for s in sequences]

    pairs = [(sequence(2, 1), sequence(4, 3)), (sequence(1, 5), sequence(1, 2))]
    scores = score_pairs(scorer, pairs)
    assert calls == [4]
    assert (scores.chosen, scores.rejected) == ([-1.0, -5.0], [-3.0, -2.0])
    assert (scores.chosen_tokens, scores.rejected_tokens) == ([2, 1], [4, 1])


def test_a_sweep_over_preference_data_ranks_pref_accuracy_maximised():
    cfg = compose(["experiment=claims_dpo"])
    assert task_default(cfg) == ("pref_accuracy", "maximize") and objective_setting(cfg) == "pref_accuracy"
    assert sweeper_value(cfg, {"pref_accuracy": 0.75, "val_loss": 0.4}) == 0.75
    # stage=train reports no pref_accuracy: the job returns its loss, as every sweep did before
    assert sweeper_value(cfg, {"val_loss": 0.4, "train_loss": 0.5}) == 0.4
    # other data keeps val_loss (None: objective_of's val_loss, else train_loss)
    assert task_default(compose()) is None and objective_setting(compose()) is None
    # an hparams_search names its own objective
    assert task_default(compose(["experiment=claims_dpo", "hparams_search=optuna"])) is None


def test_optuna_can_search_beta_by_pref_accuracy():
    cfg = compose(["experiment=claims_dpo", "hparams_search=optuna", "hparams_search.objective=pref_accuracy",
                   "hparams_search.direction=maximize"])
    assert search_problems(cfg) == []
    assert not [v for v in rules.violations(cfg, {}) if "objective" in v.where]
    no_eval = compose(["experiment=claims_dpo", "hparams_search=optuna", "hparams_search.objective=pref_accuracy",
                       "hparams_search.direction=maximize", "stage=train"])
    assert [p[0] for p in search_problems(no_eval)] == [
        "hparams_search.objective=pref_accuracy is not reported by this run: stage=train does not evaluate"]


def test_the_sweep_plan_of_preference_data_maximises_pref_accuracy(tmp_path):
    from conftest import CONF
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import open_dict

    from thinker.sweeps.plan import plan

    def planned(overrides):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = hydra_compose(config_name="config", overrides=overrides, return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.sweep.dir = str(tmp_path / "multirun" / "2026-01-01" / "12-00-00")
        return plan(cfg)

    info = planned(["experiment=claims_dpo"])
    assert (info.objective, info.direction, info.sweeper) == ("pref_accuracy", "maximize", "basic")
    info = planned([])  # claim data: the held-out loss, minimised, as before
    assert (info.objective, info.direction) == (None, "minimize")
