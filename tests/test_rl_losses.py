"""thinker.models.rl_losses against direct computations written out here: values and gradients of each loss.

The expected numbers are computed independently of the module (per token in float64 Python arithmetic, and
the gradients from the formulas' derivatives by hand), so a wrong sign, a missing stop-gradient or a clip
applied on the wrong side fails here.
"""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from thinker.models import rl_losses  # noqa: E402

# one datum of 8 tokens: log-ratios from -0.9 to 0.9, so some ratios fall outside every clip band used below
LOGP = [-1.2, -0.4, -2.5, -0.05, -3.0, -0.7, -1.9, -0.3]
LOG_RATIO = [-0.9, -0.6, -0.3, -0.05, 0.05, 0.3, 0.6, 0.9]
Q = [lp - d for lp, d in zip(LOGP, LOG_RATIO, strict=True)]
ADV = [1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 1.0, -1.0]


def run(name: str, config: dict | None = None, **inputs):
    """(per-token loss, d(sum loss)/d logprobs) for loss `name` on the datum above."""
    logprobs = torch.tensor(LOGP, dtype=torch.float64, requires_grad=True)
    tensors = {"logprobs": torch.tensor(Q, dtype=torch.float64), "advantages": torch.tensor(ADV, dtype=torch.float64)}
    tensors |= {k: torch.tensor(v, dtype=torch.float64) for k, v in inputs.items()}
    loss = rl_losses.elementwise(name, logprobs, tensors, rl_losses.check_config(name, config))
    loss.sum().backward()
    return loss.detach().tolist(), logprobs.grad.tolist()


def clip(x: float, low: float, high: float) -> float:
    return min(max(x, low), high)


def check(actual: tuple[list[float], list[float]], values: list[float], grads: list[float]) -> None:
    assert actual[0] == pytest.approx(values, rel=1e-9, abs=1e-12)
    assert actual[1] == pytest.approx(grads, rel=1e-9, abs=1e-12)


def ratios() -> list[float]:
    return [math.exp(d) for d in LOG_RATIO]


def test_importance_sampling():
    r = ratios()
    check(run("importance_sampling"), [-ri * a for ri, a in zip(r, ADV, strict=True)],
          [-ri * a for ri, a in zip(r, ADV, strict=True)])  # d(p/q)/dlog p = p/q


def clipped_objective(r: float, a: float, low: float, high: float) -> tuple[float, float]:
    """-min(r a, clip(r) a) and its derivative in log p (r's own derivative is r; the clipped branch is flat)."""
    unclipped, clipped = r * a, clip(r, low, high) * a
    if unclipped <= clipped:
        return -unclipped, -r * a
    return -clipped, 0.0


@pytest.mark.parametrize("config", [None, {"clip_low_threshold": 0.9, "clip_high_threshold": 1.1}])
def test_ppo_clips_each_token_with_the_configured_thresholds(config):
    low, high = (0.8, 1.2) if config is None else (0.9, 1.1)
    expected = [clipped_objective(r, a, low, high) for r, a in zip(ratios(), ADV, strict=True)]
    check(run("ppo", config), [v for v, _ in expected], [g for _, g in expected])


@pytest.mark.parametrize("config", [None, {"clip_low_threshold": 0.5, "clip_high_threshold": 1.05}])
def test_cispo_weighs_log_p_by_the_detached_clipped_ratio(config):
    low, high = (0.8, 1.2) if config is None else (0.5, 1.05)
    weights = [clip(r, low, high) for r in ratios()]
    check(run("cispo", config), [-w * lp * a for w, lp, a in zip(weights, LOGP, ADV, strict=True)],
          [-w * a for w, a in zip(weights, ADV, strict=True)])  # the weight is a constant: no d(ratio) term


def test_per_token_thresholds_win_over_the_config():
    low, high = [0.95] * 8, [1.02] * 8
    weights = [clip(r, 0.95, 1.02) for r in ratios()]
    out = run("cispo", {"clip_low_threshold": 0.1, "clip_high_threshold": 5.0},
              clip_low_threshold=low, clip_high_threshold=high)
    check(out, [-w * lp * a for w, lp, a in zip(weights, LOGP, ADV, strict=True)],
          [-w * a for w, a in zip(weights, ADV, strict=True)])


@pytest.mark.parametrize("beta", [None, 0.5])
def test_dro_is_log_p_times_advantage_minus_a_quadratic_penalty(beta):
    b = 0.05 if beta is None else beta
    check(run("dro", None if beta is None else {"beta": beta}),
          [-(lp * a - 0.5 * b * d * d) for lp, a, d in zip(LOGP, ADV, LOG_RATIO, strict=True)],
          [-(a - b * d) for a, d in zip(ADV, LOG_RATIO, strict=True)])


def gspo_expected(mask: list[float], low: float, high: float) -> tuple[list[float], list[float]]:
    chosen = [d for d, m in zip(LOG_RATIO, mask, strict=True) if m]
    s = math.exp(sum(chosen) / len(chosen))  # the geometric mean of the masked tokens' ratios
    pairs = [clipped_objective(s, a, low, high) for a in ADV]  # every token carries s, with its own gradient
    return [v for v, _ in pairs], [g for _, g in pairs]


def test_gspo_uses_one_sequence_ratio_over_the_masked_tokens():
    mask = [0, 0, 1, 1, 1, 1, 1, 1]  # s = exp(0.9 / 6) = 1.16: inside the default band, every token trains
    check(run("gspo", sequence_ratio_mask=mask), *gspo_expected(mask, 0.8, 1.2))
    narrow = {"clip_low_threshold": 0.95, "clip_high_threshold": 1.05}  # s above the band: A > 0 tokens clip
    out = run("gspo", narrow, sequence_ratio_mask=mask)
    check(out, *gspo_expected(mask, 0.95, 1.05))
    assert out[1][0] == 0.0 and out[1][1] != 0.0


def test_gspo_without_a_mask_takes_the_tokens_with_an_advantage():
    global ADV
    saved = ADV
    try:
        ADV = [0.0, 0.0, *saved[2:]]  # prompt-like positions: no advantage
        check(run("gspo"), *gspo_expected([0, 0, 1, 1, 1, 1, 1, 1], 0.8, 1.2))
    finally:
        ADV = saved


@pytest.mark.parametrize("kl", [0.0, 0.3])
def test_stable_reinforce_drops_tokens_outside_the_band_and_adds_the_kl_to_the_sampler(kl):
    sampled = [0, 1, 1, 1, 1, 1, 1, 1]  # the first target is a prompt token
    config = {"kl_coeff": kl, "clip_low_threshold": 0.6, "clip_high_threshold": 1.5}
    values, grads = [], []
    for r, d, lp, a, s in zip(ratios(), LOG_RATIO, LOGP, ADV, sampled, strict=True):
        w = r if 0.6 <= r <= 1.5 else 0.0  # exp(-0.6) = 0.55 and exp(0.6) = 1.82 fall out, exp(+-0.3) stay in
        values.append(s * (-w * lp * a + kl * (r - 1 - d)))
        grads.append(s * (-w * a + kl * (r - 1)))
    check(run("stable_reinforce", config, sampled=sampled), values, grads)
    assert values[1] == (0.0 if kl == 0 else pytest.approx(0.3 * (math.exp(-0.6) - 1 + 0.6)))


def test_batched_rows_give_the_same_numbers_as_one_datum_at_a_time():
    logp = torch.tensor([LOGP, LOGP[::-1]], dtype=torch.float64)
    inputs = {"logprobs": torch.tensor([Q, Q[::-1]], dtype=torch.float64),
              "advantages": torch.tensor([ADV, ADV[::-1]], dtype=torch.float64)}
    for name in ("gspo", "ppo", "cispo", "dro"):
        config = rl_losses.check_config(name, None)
        both = rl_losses.elementwise(name, logp, inputs, config)
        for row in range(2):
            alone = rl_losses.elementwise(name, logp[row], {k: v[row] for k, v in inputs.items()}, config)
            torch.testing.assert_close(both[row], alone)


@pytest.mark.parametrize(("name", "config", "message"), [
    ("ppo", {"clip_low_threshold": 1.3}, r"0 <= clip_low_threshold <= 1 <= clip_high_threshold.*1.3 and 1.2"),
    ("cispo", {"clip_high_threshold": 0.7}, r"clip_high_threshold"),
    ("dro", {"beta": -1}, r"'beta'\] must be 0 or more"),
    ("stable_reinforce", {"kl_coeff": -0.1}, r"'kl_coeff'\] must be 0 or more"),
    ("gspo", {"beta": 0.1}, r"key 'beta' is not used by 'gspo' \(its keys: clip_low_threshold, clip_high_thr"),
    ("importance_sampling", {"clip_low_threshold": 0.9}, r"not used by 'importance_sampling' \(its keys: none\)"),
    ("dro", {"beta": "high"}, r"'beta'\] must be a number"),
    ("reinforce", {}, r"'reinforce' is not one of importance_sampling, ppo, cispo, dro, gspo, stable_reinforce"),
])
def test_a_bad_config_names_the_key_and_the_rule(name, config, message):
    with pytest.raises(rl_losses.LossConfigError, match=message):
        rl_losses.check_config(name, config)


def test_the_table_holds_every_policy_loss_of_the_sdk():
    from typing import get_args

    types = pytest.importorskip("tinker.types")
    sdk = set(get_args(types.LossFnType)) - {"cross_entropy", "custom"}
    assert set(rl_losses.LOSSES) == sdk


def test_dros_penalty_leaves_the_prompt_positions_of_a_cookbook_datum_alone():
    """A prompt position carries neither an advantage nor a sampler log-prob (q = 0): its (log p - q)^2 would
    pull the prompt's log p to 0, so it costs nothing; a sampled token with advantage 0 keeps its penalty."""
    logprobs = torch.tensor([[-2.0, -1.5, -0.7, -0.4]], requires_grad=True)
    q = torch.tensor([[0.0, 0.0, -0.5, -0.6]])
    advantages = torch.tensor([[0.0, 0.0, 0.0, 1.5]])
    loss = rl_losses.elementwise("dro", logprobs, {"logprobs": q, "advantages": advantages},
                                 rl_losses.check_config("dro", None))
    loss.sum().backward()
    expected = [0.0, 0.0, 0.5 * 0.05 * 0.2**2, -(-0.4 * 1.5 - 0.5 * 0.05 * 0.2**2)]
    assert loss.detach()[0].tolist() == pytest.approx(expected, abs=1e-7)
    assert logprobs.grad[0, :2].tolist() == [0.0, 0.0]
