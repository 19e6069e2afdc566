"""thinker tinker-serve: the real tinker SDK over loopback HTTP against a server on a thread (and, in the slow
tests, a `thinker tinker-serve` process killed with SIGKILL and restarted). No mocks.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import socket
import subprocess
import sys
import textwrap
import time

import httpx
import numpy as np
import pytest
from conftest import ROOT

tinker = pytest.importorskip("tinker")
torch = pytest.importorskip("torch")
from tinker import types  # noqa: E402

from thinker.commands.cli import main  # noqa: E402

KEY = "tml-test"
SENTENCES = [
    "The claim is supported by the evidence in the abstract.",
    "Vitamin D does not reduce the risk of fractures.",
    "Results were mixed.",
]


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tinker-serve-state")


@pytest.fixture(scope="module")
def server(private_models_dir, state_dir):
    from support.faults import start_with_faults

    with start_with_faults(models=["tiny-qwen"], state_dir=state_dir) as running:
        yield running


@pytest.fixture(scope="module")
def service(server):
    client = tinker.ServiceClient(base_url=server.base_url, api_key=KEY)
    yield client
    client.close("success").result(timeout=30)


@pytest.fixture(scope="module")
def rest(server):
    return tinker.RestClient(base_url=server.base_url, api_key=KEY)


@pytest.fixture(scope="module")
def tokenizer(service):
    return new_client(service).get_tokenizer()


def new_client(service, seed: int = 0, rank: int = 8, **kwargs):
    return service.create_lora_training_client(base_model="tiny-qwen", rank=rank, seed=seed, train_unembed=False,
                                               **kwargs).result(timeout=60)


def datum(tokens: list[int], weights: list[float] | None = None) -> types.Datum:
    """Predict tokens[1:] from tokens[:-1]."""
    return types.Datum(model_input=types.ModelInput.from_ints(tokens[:-1]),
                       loss_fn_inputs={"target_tokens": tokens[1:],
                                       "weights": weights if weights is not None else [1.0] * (len(tokens) - 1)})


@pytest.fixture(scope="module")
def batch(tokenizer):
    return [datum(tokenizer.encode(s)) for s in SENTENCES]


def logprobs_of(result) -> list[np.ndarray]:
    return [np.asarray(out["logprobs"].data, dtype=np.float64) for out in result.loss_fn_outputs]


def adam(**overrides) -> types.AdamParams:
    return types.AdamParams(**({"learning_rate": 3e-3} | overrides))


# ---------------------------------------------------------------- service, sessions, keys


def test_capabilities_list_the_served_model(server, rest):
    caps = rest.get_server_capabilities().result(timeout=30)
    assert [m.model_name for m in caps.supported_models] == ["tiny-qwen"]
    model = caps.supported_models[0]
    assert model.trainable and model.sampleable
    assert model.max_context_length == 1024  # tiny-qwen's max_position_embeddings
    health = httpx.get(f"{server.base_url}/api/v1/healthz", timeout=10)
    assert health.status_code == 200 and health.json() == {"status": "ok"}


def test_training_client_reports_model_and_a_local_tokenizer(service):
    client = new_client(service)
    info = client.get_info()
    assert re.fullmatch(r"[0-9a-f-]{36}:train:\d+", client.model_id)
    assert info.model_data.model_name == "tiny-qwen" and info.lora_rank == 8 and info.is_lora
    assert os.path.isdir(info.model_data.tokenizer_id)
    tokenizer = client.get_tokenizer()  # loads from that folder: no hub access
    assert tokenizer.decode(tokenizer.encode("supported claim")) == "supported claim"


def test_unknown_base_model_error_lists_the_served_models(service):
    with pytest.raises(Exception, match=r"'nope' is not served .*serving: tiny-qwen"):
        service.create_lora_training_client(base_model="nope", rank=8).result(timeout=60)


def test_requests_without_an_accepted_key_get_401(server):
    for headers in ({}, {"X-API-Key": "not-a-tml-key"}):
        answer = httpx.post(f"{server.base_url}/api/v1/create_session", json={}, headers=headers, timeout=10)
        assert answer.status_code == 401
        assert "X-API-Key" in answer.json()["error"]
    assert httpx.post(f"{server.base_url}/api/v1/create_session", headers={"X-API-Key": KEY}, timeout=10,
                      json={"tags": [], "user_metadata": None, "sdk_version": "x"}).status_code == 200


def test_keys_restricted_by_the_server_are_refused_through_the_sdk(private_models_dir, tmp_path):
    from thinker.tinker_serve.server import start_in_thread

    with start_in_thread(state_dir=tmp_path, api_keys={"tml-good"}) as restricted:
        refused = tinker.ServiceClient(base_url=restricted.base_url, api_key="tml-wrong")
        with pytest.raises(tinker.AuthenticationError, match="401"):
            refused.create_lora_training_client(base_model="tiny-qwen", rank=4).result(timeout=60)
        caps = tinker.RestClient(base_url=restricted.base_url, api_key="tml-good").get_server_capabilities()
        assert caps.result(timeout=30).supported_models[0].model_name == "tiny-qwen"


# ---------------------------------------------------------------- training


def test_loss_decreases_with_requests_submitted_before_waiting(service, batch):
    client = new_client(service)
    futures = []
    for _ in range(8):  # every request is queued before the first result is read: seq-id order does the rest
        futures.append((client.forward_backward(batch, "cross_entropy"), client.optim_step(adam())))
    losses = [fb.result(timeout=120).metrics["loss:sum"] for fb, _ in futures]
    steps = [opt.result(timeout=120) for _, opt in futures]
    assert all(later < earlier for earlier, later in itertools.pairwise(losses)), losses
    assert losses[-1] < losses[0] * 0.85, losses
    assert all(s.metrics["grad_norm:mean"] > 0 for s in steps)
    result = futures[0][0].result()
    assert set(result.loss_fn_outputs[0]) == {"logprobs", "elementwise_loss"}
    total = sum(float(np.sum(out["elementwise_loss"].data)) for out in result.loss_fn_outputs)
    assert total == pytest.approx(result.metrics["loss:sum"], rel=1e-5)


def test_cross_entropy_outputs_are_logprobs_times_weights(service, tokenizer):
    client = new_client(service)
    tokens = tokenizer.encode(SENTENCES[0])
    weights = [0.0] * 4 + [2.0] * (len(tokens) - 5)
    result = client.forward([datum(tokens, weights)], "cross_entropy").result(timeout=60)
    logprobs = np.asarray(result.loss_fn_outputs[0]["logprobs"].data)
    elementwise = np.asarray(result.loss_fn_outputs[0]["elementwise_loss"].data)
    assert len(logprobs) == len(tokens) - 1 and np.all(logprobs < 0)
    np.testing.assert_allclose(elementwise, -logprobs * np.asarray(weights), rtol=1e-6, atol=1e-6)
    assert result.metrics["loss:sum"] == pytest.approx(float(np.sum(-logprobs * np.asarray(weights))), rel=1e-5)


def _plain_peft_steps(data: list[types.Datum], steps: int, params: types.AdamParams) -> tuple[dict, list[float]]:
    """The same training with plain peft: tiny-qwen as backend=local loads it, LoRA seeded with 0."""
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

    from thinker.launch.app import compose_config
    from thinker.models.adapter_weights import training_start_point
    from thinker.models.loading import load_causal_lm, resolve_model_path
    from thinker.paths import resolve_input

    cfg = compose_config(["model=tiny-qwen"])
    path = training_start_point(resolve_model_path(cfg.model, 42, [resolve_input(p) for p in cfg.model.tokenizer_corpus]))
    model = load_causal_lm(path, method="lora", quant=None, dtype="fp32").eval()
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM",
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                             "gate_proj", "up_proj", "down_proj"]))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=params.learning_rate, betas=(params.beta1, params.beta2),
                                  eps=params.eps, weight_decay=params.weight_decay)
    losses = []
    for _ in range(steps):
        loss = torch.zeros(())
        for d in data:  # one datum at a time, no padding
            ids = torch.tensor([d.model_input.to_ints()])
            logprobs = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
            targets = torch.tensor(d.loss_fn_inputs["target_tokens"].data)
            weights = torch.tensor(d.loss_fn_inputs["weights"].data)
            loss = loss + (-logprobs[torch.arange(len(targets)), targets] * weights).sum()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
    return get_peft_model_state_dict(model), losses


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")
def test_gradients_and_adamw_match_plain_peft(service, batch, state_dir):
    from safetensors.torch import load_file

    from thinker.tinker_serve.checkpoints import ADAPTER_FILE, CheckpointStore, parse_tinker_path

    # a large eps makes AdamW's update nearly linear in the gradient, so the weights check the gradients
    params = adam(learning_rate=0.05, eps=1.0, weight_decay=0.01)
    client = new_client(service, seed=0)
    losses = []
    for _ in range(2):
        fb, _ = client.forward_backward(batch, "cross_entropy"), client.optim_step(params)
        losses.append(fb.result(timeout=60).metrics["loss:sum"])
    path = client.save_weights_for_sampler("grad-check").result(timeout=60).path
    served = load_file(str(CheckpointStore(state_dir).folder(parse_tinker_path(path)) / ADAPTER_FILE))

    expected, expected_losses = _plain_peft_steps(batch, 2, params)
    assert losses == pytest.approx(expected_losses, rel=1e-5)
    assert set(served) == set(expected)
    for name, tensor in expected.items():
        torch.testing.assert_close(served[name], tensor, rtol=0, atol=2e-6, msg=name)
    moved = max(float(t.abs().max()) for n, t in expected.items() if "lora_B" in n)
    assert moved > 1e-3  # the steps really changed the adapter (B starts at zero)


def test_gradients_accumulate_until_optim_step(service, batch):
    split = new_client(service, seed=3)
    whole = new_client(service, seed=3)
    split.forward_backward(batch[:1], "cross_entropy")
    split.forward_backward(batch[1:], "cross_entropy")
    whole.forward_backward(batch, "cross_entropy")
    split.optim_step(adam(learning_rate=0.05)).result(timeout=60)
    whole.optim_step(adam(learning_rate=0.05)).result(timeout=60)
    after_split = split.forward(batch, "cross_entropy").result(timeout=60)
    after_whole = whole.forward(batch, "cross_entropy").result(timeout=60)
    for a, b in zip(logprobs_of(after_split), logprobs_of(after_whole), strict=True):
        np.testing.assert_allclose(a, b, atol=2e-5)


def test_forward_matches_forward_backward_and_accumulates_nothing(service, batch):
    client = new_client(service, seed=1)
    forward = client.forward(batch, "cross_entropy").result(timeout=60)
    both = client.forward_backward(batch, "cross_entropy").result(timeout=60)
    for a, b in zip(logprobs_of(forward), logprobs_of(both), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert forward.metrics["loss:sum"] == pytest.approx(both.metrics["loss:sum"], rel=1e-6)

    untouched = new_client(service, seed=1)
    before = untouched.forward(batch, "cross_entropy").result(timeout=60)
    untouched.optim_step(adam(learning_rate=0.5)).result(timeout=60)  # nothing accumulated: nothing moves
    after = untouched.forward(batch, "cross_entropy").result(timeout=60)
    # a step with nothing accumulated leaves the weights alone; the two forwards agree within fp32 rounding
    # (a 0.5-lr Adam step would move the loss by far more than 1e-6)
    assert after.metrics["loss:sum"] == pytest.approx(before.metrics["loss:sum"], rel=1e-6)


def test_padded_batch_equals_one_datum_at_a_time(service, batch):
    client = new_client(service, seed=2)
    client.forward_backward(batch, "cross_entropy")
    client.optim_step(adam(learning_rate=0.05)).result(timeout=60)  # a non-zero adapter
    together = logprobs_of(client.forward(batch, "cross_entropy").result(timeout=60))
    assert len({len(x) for x in together}) == 3  # three lengths: two of them are padded in the batch
    for d, batched in zip(batch, together, strict=True):
        alone = logprobs_of(client.forward([d], "cross_entropy").result(timeout=60))[0]
        np.testing.assert_allclose(batched, alone, atol=1e-5)


def test_importance_sampling_and_ppo_follow_the_tinker_definitions(service, tokenizer):
    client = new_client(service)
    tokens = tokenizer.encode(SENTENCES[1])
    n = len(tokens) - 1
    current = logprobs_of(client.forward([datum(tokens)], "cross_entropy").result(timeout=60))[0]
    old = current + np.linspace(-0.5, 0.5, n)  # sampler logprobs: ratios from e^-0.5 to e^0.5
    advantages = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    rl = types.Datum(model_input=types.ModelInput.from_ints(tokens[:-1]),
                     loss_fn_inputs={"target_tokens": tokens[1:], "logprobs": old.astype(np.float32),
                                     "advantages": advantages.astype(np.float32)})
    ratio = np.exp(current - old.astype(np.float32))
    is_out = client.forward([rl], "importance_sampling").result(timeout=60)
    np.testing.assert_allclose(is_out.loss_fn_outputs[0]["elementwise_loss"].data, -(ratio * advantages), rtol=1e-4,
                               atol=1e-6)
    ppo = client.forward([rl], "ppo", {"clip_low_threshold": 0.9, "clip_high_threshold": 1.1}).result(timeout=60)
    expected = -np.minimum(ratio * advantages, np.clip(ratio, 0.9, 1.1) * advantages)
    np.testing.assert_allclose(ppo.loss_fn_outputs[0]["elementwise_loss"].data, expected, rtol=1e-4, atol=1e-6)
    assert ppo.metrics["loss:sum"] == pytest.approx(float(expected.sum()), rel=1e-4, abs=1e-5)
    assert not np.allclose(expected, -(ratio * advantages))  # the clip bites on this data


def rl_datum(tokens: list[int], old: np.ndarray, advantages: np.ndarray, **extra) -> types.Datum:
    return types.Datum(model_input=types.ModelInput.from_ints(tokens[:-1]),
                       loss_fn_inputs={"target_tokens": tokens[1:], "logprobs": old.astype(np.float32),
                                       "advantages": advantages.astype(np.float32), **extra})


def elementwise_of(client, data, loss_fn: str, config=None) -> np.ndarray:
    out = client.forward(data, loss_fn, config).result(timeout=60)
    values = np.asarray(out.loss_fn_outputs[0]["elementwise_loss"].data, dtype=np.float64)
    assert out.metrics["loss:sum"] == pytest.approx(float(values.sum()), rel=1e-4, abs=1e-5)
    return values


def test_cispo_dro_and_gspo_follow_the_tinker_definitions(service, tokenizer):
    """The values the server answers, against the formulas of Tinker's loss docs written out in numpy."""
    client = new_client(service)
    tokens = tokenizer.encode(SENTENCES[1])
    n = len(tokens) - 1
    current = logprobs_of(client.forward([datum(tokens)], "cross_entropy").result(timeout=60))[0]
    old = (current + np.linspace(-0.5, 0.5, n)).astype(np.float32)  # ratios from e^-0.5 to e^0.5
    advantages = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    ratio = np.exp(current - old)
    rl = rl_datum(tokens, old, advantages)
    for low, high in ((0.8, 1.2), (0.9, 1.05)):
        config = None if (low, high) == (0.8, 1.2) else {"clip_low_threshold": low, "clip_high_threshold": high}
        np.testing.assert_allclose(elementwise_of(client, [rl], "cispo", config),
                                   -(np.clip(ratio, low, high) * current * advantages), rtol=1e-4, atol=1e-5)
    for beta in (None, 1.0):
        b = 0.05 if beta is None else beta
        np.testing.assert_allclose(elementwise_of(client, [rl], "dro", None if beta is None else {"beta": beta}),
                                   -(current * advantages - 0.5 * b * (current - old) ** 2), rtol=1e-4, atol=1e-5)
    mask = (np.arange(n) >= n // 2).astype(np.float32)  # the sequence ratio over the second half: e^-0.25 or so
    s = np.exp(np.mean((current - old)[mask == 1]))
    for low, high in ((0.8, 1.2), (0.5, 1.5)):
        config = {"clip_low_threshold": low, "clip_high_threshold": high}
        expected = -np.minimum(s * advantages, np.clip(s, low, high) * advantages)
        np.testing.assert_allclose(elementwise_of(client, [rl_datum(tokens, old, advantages, sequence_ratio_mask=mask)],
                                                  "gspo", config), expected, rtol=1e-4, atol=1e-5)
    assert s < 0.8  # the default band clips the A < 0 tokens, the wide one none: the two configs differ


@pytest.mark.parametrize("loss_fn", ["cispo", "dro", "gspo"])
def test_policy_losses_train_like_the_same_loss_written_as_a_custom_loss(service, tokenizer, loss_fn):
    """The gradient (stop-gradients included): one AdamW step on the built-in loss lands where the same
    objective, written here in torch and run through forward_backward_custom, lands."""
    tokens = tokenizer.encode(SENTENCES[0])
    n = len(tokens) - 1
    builtin, custom = new_client(service, seed=4), new_client(service, seed=4)
    current = logprobs_of(builtin.forward([datum(tokens)], "cross_entropy").result(timeout=60))[0]
    old = torch.tensor(current + np.linspace(-0.4, 0.4, n), dtype=torch.float32)
    advantages = torch.tensor(np.where(np.arange(n) % 3 == 0, -1.0, 1.0), dtype=torch.float32)
    rl = rl_datum(tokens, old.numpy(), advantages.numpy())

    def objective(data, logprobs_list):
        lp = logprobs_list[0]
        if loss_fn == "cispo":
            loss = -(torch.clamp(torch.exp(lp - old), 0.8, 1.2).detach() * lp * advantages).sum()
        elif loss_fn == "dro":
            loss = -(lp * advantages - 0.025 * (lp - old) ** 2).sum()
        else:  # GSPO-token over the tokens with an advantage (all of them here)
            s = torch.exp((lp.detach() - old).mean() + lp - lp.detach())
            loss = -torch.minimum(s * advantages, torch.clamp(s, 0.8, 1.2) * advantages).sum()
        return loss, {}

    builtin.forward_backward([rl], loss_fn)
    builtin.optim_step(adam(learning_rate=0.05)).result(timeout=60)
    custom.forward_backward_custom([rl], objective).result(timeout=60)
    custom.optim_step(adam(learning_rate=0.05)).result(timeout=60)
    after = [logprobs_of(c.forward([datum(tokens)], "cross_entropy").result(timeout=60))[0] for c in (builtin, custom)]
    np.testing.assert_allclose(after[0], after[1], atol=2e-5)
    assert np.abs(after[0] - current).max() > 1e-3  # the step moved the model


@pytest.mark.parametrize(("loss_fn", "config", "fragment"), [
    ("ppo", {"clip_low_threshold": 1.5}, "'ppo' needs 0 <= clip_low_threshold <= 1 <= clip_high_threshold"),
    ("dro", {"beta": -0.5}, "loss_fn_config['beta'] must be 0 or more, got -0.5"),
    ("cispo", {"kl_coeff": 0.1}, "loss_fn_config key 'kl_coeff' is not used by 'cispo' (its keys: "
                                 "clip_low_threshold, clip_high_threshold)"),
    ("gspo", {"clip_high_threshold": "wide"}, "loss_fn_config['clip_high_threshold'] must be a number, got 'wide'"),
])
def test_a_bad_loss_fn_config_is_refused_with_the_rule(service, tokenizer, loss_fn, config, fragment):
    client = new_client(service)
    tokens = tokenizer.encode(SENTENCES[2])
    n = len(tokens) - 1
    rl = rl_datum(tokens, np.full(n, -1.0), np.ones(n))
    with pytest.raises(Exception, match=re.escape(fragment)):
        client.forward_backward([rl], loss_fn, config).result(timeout=60)
    assert client.forward([rl], loss_fn).result(timeout=60).metrics["loss:sum"] != 0  # and the model serves on


def sampled_datum(prompt: list[int], sequence, advantage: float, tokens: list[int] | None = None) -> types.Datum:
    """A datum of prompt + sampled tokens with its provenance, as tinker-cookbook's rl_loop builds it."""
    sampled = list(sequence.tokens if tokens is None else tokens)
    ob = len(prompt) - 1
    rl = types.Datum(model_input=types.ModelInput.from_ints(prompt + sampled[:-1]),
                     loss_fn_inputs={"target_tokens": [0] * ob + sampled,
                                     "logprobs": [0.0] * ob + list(sequence.logprobs),
                                     "advantages": [0.0] * ob + [advantage] * len(sampled)})
    sid = sequence.sequence_id
    return rl.with_provenance(
        model_input=[types.PromptProvenanceSpan(sequence_id=sid, length=len(prompt)),
                     types.SampledProvenanceSpan(sequence_id=sid, length=len(sampled) - 1)],
        loss_fn_inputs=[types.PromptProvenanceSpan(sequence_id=sid, offset=1, length=ob),
                        types.SampledProvenanceSpan(sequence_id=sid, length=len(sampled))])


def test_stable_reinforce_trains_on_what_the_sampler_recorded(service, tokenizer):
    import dataclasses

    client = new_client(service, seed=6)
    sampler = client.save_weights_and_get_sampling_client(record_stability_info=True).result(timeout=60)
    prompt = tokenizer.encode(SENTENCES[0])[:5]
    sequence = sample(sampler, prompt, temperature=1.0, seed=11, max_tokens=6, stop=[]).sequences[0]
    rl = sampled_datum(prompt, sequence, advantage=1.5)
    ob, k = len(prompt) - 1, len(sequence.tokens)

    current = logprobs_of(client.forward([rl], "importance_sampling").result(timeout=60))[0]
    q = np.asarray(sequence.logprobs)  # what the sampler recorded: the same weights, so ratio 1 up to numerics
    np.testing.assert_allclose(current[ob:], q, atol=1e-4)
    ratio, kl = np.exp(current[ob:] - q), 0.5
    expected = np.concatenate([np.zeros(ob), -(ratio * current[ob:] * 1.5) + kl * (ratio - 1 - np.log(ratio))])
    np.testing.assert_allclose(elementwise_of(client, [rl], "stable_reinforce", {"kl_coeff": kl}), expected,
                               rtol=1e-4, atol=1e-5)
    # q is the record's, not the client's: a client that sends other logprobs gets the same loss
    lied = dataclasses.replace(rl, loss_fn_inputs=rl.loss_fn_inputs | {
        "logprobs": types.TensorData.from_numpy(np.full(ob + k, -0.1, dtype=np.float32))})
    np.testing.assert_allclose(elementwise_of(client, [lied], "stable_reinforce", {"kl_coeff": kl}), expected,
                               rtol=1e-4, atol=1e-5)
    # and it trains: the sampled tokens become more likely
    client.forward_backward([rl], "stable_reinforce")
    client.optim_step(adam(learning_rate=0.02)).result(timeout=60)
    after = logprobs_of(client.forward([rl], "importance_sampling").result(timeout=60))[0]
    assert after[ob:].sum() > current[ob:].sum() + 0.05


def test_stable_reinforce_refuses_data_without_a_true_provenance(server, service, tokenizer):
    client = new_client(service, seed=6)
    recording = client.save_weights_and_get_sampling_client(record_stability_info=True).result(timeout=60)
    plain = client.save_weights_and_get_sampling_client().result(timeout=60)
    prompt = tokenizer.encode(SENTENCES[1])[:4]
    sequence = sample(recording, prompt, temperature=1.0, seed=2, max_tokens=5, stop=[]).sequences[0]
    good = sampled_datum(prompt, sequence, advantage=1.0)

    def refused_with(data, fragment: str) -> None:
        with pytest.raises(Exception, match=re.escape(fragment)):
            client.forward_backward(data, "stable_reinforce").result(timeout=60)

    bare = types.Datum(model_input=good.model_input, loss_fn_inputs=good.loss_fn_inputs)
    refused_with([bare], "loss_fn 'stable_reinforce' needs provenance on every datum, and data[0] has none")
    unrecorded = sample(plain, prompt, temperature=1.0, seed=2, max_tokens=5, stop=[]).sequences[0]
    refused_with([good, sampled_datum(prompt, unrecorded, 1.0)],
                 f"names sequence {unrecorded.sequence_id!r}, which this server has no stability record of")
    other = list(sequence.tokens)
    other[1] = (other[1] + 1) % 100
    forged = sampled_datum(prompt, sequence, 1.0, tokens=other)
    refused_with([forged], f"holds token {other[1]}, but sampled position 1 of sequence {sequence.sequence_id!r} "
                           f"is token {sequence.tokens[1]}")
    advantages = np.asarray(good.loss_fn_inputs["advantages"].data, dtype=np.float32)
    advantages[0] = 0.7
    on_prompt = types.Datum(model_input=good.model_input, loss_fn_inputs=good.loss_fn_inputs | {
        "advantages": types.TensorData.from_numpy(advantages)}).with_provenance(
        model_input=good.model_input_spans, loss_fn_inputs=good.loss_fn_input_spans)
    refused_with([on_prompt], "advantage 0.7 at target position 0, a prompt token")
    # records belong to the session that sampled them
    elsewhere = tinker.ServiceClient(base_url=server.base_url, api_key=KEY)
    try:
        with pytest.raises(Exception, match=re.escape(f"names sequence {sequence.sequence_id!r}, which this server "
                                                      "has no stability record of in this session")):
            new_client(elsewhere, seed=6).forward_backward([good], "stable_reinforce").result(timeout=60)
    finally:
        elsewhere.close("success").result(timeout=30)
    # after all that, the good datum trains
    assert client.forward_backward([good], "stable_reinforce").result(timeout=60).metrics["loss:sum"] != 0


def test_unsupported_loss_and_bad_inputs_fail_with_a_clear_error(service, tokenizer):
    client = new_client(service)
    tokens = tokenizer.encode(SENTENCES[2])
    with pytest.raises(Exception, match="loss_fn 'reinforce' is not supported"):
        client.forward_backward([datum(tokens)], "reinforce").result(timeout=60)
    short = types.Datum(model_input=types.ModelInput.from_ints(tokens[:-1]), loss_fn_inputs={"target_tokens": tokens[2:]})
    with pytest.raises(Exception, match=r"must have shape"):
        client.forward([short], "cross_entropy").result(timeout=60)
    # a failed request does not block the ones after it
    assert client.forward([datum(tokens)], "cross_entropy").result(timeout=60).metrics["loss:sum"] > 0


def test_a_request_that_cannot_be_decoded_fails_alone(service, tokenizer):
    client = new_client(service)
    tokens = tokenizer.encode(SENTENCES[2])
    image = types.Datum(model_input=types.ModelInput(chunks=[types.ImageChunk(data=b"\\x89PNG", format="png")]),
                        loss_fn_inputs={"target_tokens": [1]})
    with pytest.raises(Exception, match="chunks of type 'image' are not supported"):
        client.forward_backward([image], "cross_entropy").result(timeout=60)
    # its seq id was used up: the model's next requests do not wait for it
    assert client.forward([datum(tokens)], "cross_entropy").result(timeout=60).metrics["loss:sum"] > 0


def test_custom_losses_run_through_the_sdk(service, batch):
    reference = new_client(service, seed=8)
    custom = new_client(service, seed=8)
    reference.forward_backward(batch, "cross_entropy")
    reference.optim_step(adam(learning_rate=0.05)).result(timeout=60)

    def weighted_nll(data, logprobs_list):
        loss = sum((-lp * d.loss_fn_inputs["weights"].to_torch()).sum() for d, lp in zip(data, logprobs_list, strict=True))
        return loss, {"custom:sum": float(loss.detach())}

    result = custom.forward_backward_custom(batch, weighted_nll).result(timeout=60)
    custom.optim_step(adam(learning_rate=0.05)).result(timeout=60)
    assert result.metrics["custom:sum"] == pytest.approx(result.metrics["loss:sum"], rel=1e-6)
    for a, b in zip(logprobs_of(custom.forward(batch, "cross_entropy").result(timeout=60)),
                    logprobs_of(reference.forward(batch, "cross_entropy").result(timeout=60)), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_the_wire_protocol_by_hand(private_models_dir, tmp_path):
    """What the SDK relies on, without the SDK: futures, try_again, error categories, JSON results."""
    from thinker.tinker_serve.server import start_in_thread

    with start_in_thread(state_dir=tmp_path, long_poll_s=0.2) as srv:
        http = httpx.Client(base_url=f"{srv.base_url}/api/v1", headers={"X-API-Key": KEY}, timeout=30)

        def poll(answer) -> dict:
            return http.post("/retrieve_future", json={"request_id": answer.json()["request_id"]}).json()

        def retrieve(answer) -> dict:  # as the SDK does: poll again while the answer is try_again
            deadline = time.monotonic() + 60
            while (result := poll(answer)).get("type") == "try_again" and time.monotonic() < deadline:
                pass
            return result

        session = http.post("/create_session", json={"tags": [], "user_metadata": None, "sdk_version": "x"}).json()
        created = http.post("/create_model", json={"session_id": session["session_id"], "model_seq_id": 0,
                                                   "base_model": "tiny-qwen", "lora_config": {"rank": 4}})
        model_id = f"{session['session_id']}:train:0"
        assert created.json()["model_id"] == model_id
        assert retrieve(created) == {"type": "create_model", "model_id": model_id}

        forward = http.post("/forward", json={"model_id": model_id, "seq_id": 1, "forward_input": {
            "loss_fn": "cross_entropy", "data": [{"model_input": {"chunks": [{"type": "encoded_text", "tokens": [5, 6, 7]}]},
                                                  "loss_fn_inputs": {"target_tokens": {"data": [6, 7, 8], "dtype": "int64"}}}]}})
        result = retrieve(forward)  # no Accept: application/x-protobuf, so JSON
        assert result["loss_fn_output_type"] == "ArrayRecord" and result["loss_fn_outputs"][0]["logprobs"]["shape"] == [3]
        assert result["metrics"]["loss:sum"] == pytest.approx(-sum(result["loss_fn_outputs"][0]["logprobs"]["data"]), rel=1e-5)

        bad = http.post("/optim_step", json={"model_id": model_id, "seq_id": 2, "adam_params": {"learning_rate": -1}})
        assert bad.status_code == 400 and bad.json()["category"] == "user"  # refused at once, its seq id used up
        assert "adam_params.learning_rate must be in [0, 10], got -1" in bad.json()["error"]

        waiting = http.post("/optim_step", json={"model_id": model_id, "seq_id": 4, "adam_params": {}})  # 3 is missing
        assert poll(waiting) == {"type": "try_again", "request_id": waiting.json()["request_id"], "queue_state": "active"}
        http.post("/optim_step", json={"model_id": model_id, "seq_id": 3, "adam_params": {}})
        assert retrieve(waiting) == {"metrics": {"grad_norm:mean": 0.0, "learning_rate:mean": 0.0001}}
        duplicate = http.post("/optim_step", json={"model_id": model_id, "seq_id": 3, "adam_params": {}})
        assert duplicate.json()["request_id"] != waiting.json()["request_id"]
        resent = http.post("/optim_step", json={"model_id": model_id, "seq_id": 4, "adam_params": {}})
        assert resent.json()["request_id"] == waiting.json()["request_id"]

        assert http.post("/retrieve_future", json={"request_id": "nope"}).status_code == 404
        missing = http.post("/get_info", json={"model_id": "someone:train:9"})
        assert missing.status_code == 404 and "is not loaded on this server" in missing.json()["error"]
        unknown = http.post("/save_weights_external", json={})
        assert unknown.status_code == 404 and "not implemented by thinker tinker-serve" in unknown.json()["error"]

        snapshot = retrieve(http.post("/save_weights_for_sampler", json={"model_id": model_id, "seq_id": 5,
                                                                          "sampling_session_seq_id": 0}))
        sampler_id = f"{session['session_id']}:sample:0"
        assert snapshot == {"type": "save_weights_for_sampler", "path": None, "sampling_session_id": sampler_id}
        assert http.get(f"/samplers/{sampler_id}").json() == {"sampler_id": sampler_id, "base_model": "tiny-qwen",
                                                             "model_path": None}
        snapshots = list((tmp_path / "ephemeral").iterdir())
        assert len(snapshots) == 1

        assert http.post(f"/sessions/{session['session_id']}/finish", json={"reason": {"type": "success"}}).status_code == 200
        assert http.post("/get_info", json={"model_id": model_id}).status_code == 404  # closed sessions unload
        assert http.get(f"/samplers/{sampler_id}").status_code == 404
        deadline = time.monotonic() + 10
        while snapshots[0].exists() and time.monotonic() < deadline:  # the sampling thread deletes it
            time.sleep(0.05)
        assert not snapshots[0].exists()


# ---------------------------------------------------------------- checkpoints


def test_save_state_and_load_it_back_continues_exactly(service, batch, rest):
    client = new_client(service, seed=4)
    params = adam(learning_rate=0.02)
    for _ in range(2):
        client.forward_backward(batch, "cross_entropy")
        client.optim_step(params)
    saved = client.save_state("after-two", user_metadata={"note": "test"}).result(timeout=60)
    assert saved.path == f"tinker://{client.model_id}/weights/after-two"
    at_save = client.forward(batch, "cross_entropy").result(timeout=60).metrics["loss:sum"]
    client.forward_backward(batch, "cross_entropy")
    client.optim_step(params).result(timeout=60)
    uninterrupted = client.forward(batch, "cross_entropy").result(timeout=60)

    resumed = service.create_training_client_from_state_with_optimizer(saved.path).result(timeout=60)
    assert resumed.model_id != client.model_id
    assert resumed.forward(batch, "cross_entropy").result(timeout=60).metrics["loss:sum"] == pytest.approx(at_save, rel=1e-6)
    resumed.forward_backward(batch, "cross_entropy")
    resumed.optim_step(params).result(timeout=60)
    again = resumed.forward(batch, "cross_entropy").result(timeout=60)
    for a, b in zip(logprobs_of(again), logprobs_of(uninterrupted), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)

    weights_only = service.create_training_client_from_state(saved.path).result(timeout=60)
    weights_only.forward_backward(batch, "cross_entropy")
    weights_only.optim_step(params).result(timeout=60)
    fresh_adam = weights_only.forward(batch, "cross_entropy").result(timeout=60).metrics["loss:sum"]
    assert abs(fresh_adam - uninterrupted.metrics["loss:sum"]) > 1e-3  # the optimizer state mattered

    listed = rest.list_checkpoints(client.model_id).result(timeout=30).checkpoints
    assert [(c.checkpoint_id, c.checkpoint_type) for c in listed] == [("weights/after-two", "training")]
    assert listed[0].user_metadata == {"note": "test"} and listed[0].size_bytes > 0
    info = rest.get_weights_info_by_tinker_path(saved.path).result(timeout=30)
    assert (info.base_model, info.lora_rank, info.train_unembed, info.train_attn) == ("tiny-qwen", 8, False, True)
    run = rest.get_training_run(client.model_id).result(timeout=30)
    assert run.base_model == "tiny-qwen" and run.last_checkpoint.tinker_path == saved.path


def test_checkpoints_are_listed_and_deleted(service, batch, rest):
    client = new_client(service)
    state = client.save_state("keep").result(timeout=60).path
    sampler = client.save_weights_for_sampler("gone").result(timeout=60).path
    assert sampler == f"tinker://{client.model_id}/sampler_weights/gone"
    ids = {c.checkpoint_id for c in rest.list_checkpoints(client.model_id).result(timeout=30).checkpoints}
    assert ids == {"weights/keep", "sampler_weights/gone"}
    assert client.model_id in {r.training_run_id for r in rest.list_training_runs(limit=100).result(timeout=30).training_runs}
    rest.delete_checkpoint_from_tinker_path(sampler).result(timeout=30)
    ids = {c.checkpoint_id for c in rest.list_checkpoints(client.model_id).result(timeout=30).checkpoints}
    assert ids == {"weights/keep"}
    with pytest.raises(Exception, match="does not exist"):
        service.create_sampling_client(model_path=sampler).result(timeout=60)
    with pytest.raises(Exception, match="exists already"):
        client.save_state("keep").result(timeout=60)
    assert client.save_state("keep", overwrite=True).result(timeout=60).path == state
    everywhere = rest.list_user_checkpoints(limit=1000).result(timeout=30).checkpoints
    assert state in {c.tinker_path for c in everywhere} and sampler not in {c.tinker_path for c in everywhere}


# ---------------------------------------------------------------- sampling


@pytest.fixture(scope="module")
def base_sampler(service):
    return service.create_sampling_client(base_model="tiny-qwen").result(timeout=60)


def sample(sampler, prompt: list[int], n: int = 1, **params):
    return sampler.sample(types.ModelInput.from_ints(prompt), n, types.SamplingParams(**params)).result(timeout=120)


def test_greedy_sampling_is_deterministic_and_honours_num_samples_and_max_tokens(base_sampler, tokenizer):
    prompt = tokenizer.encode(SENTENCES[0])[:6]
    first = sample(base_sampler, prompt, 3, temperature=0.0, max_tokens=7, stop=[])
    second = sample(base_sampler, prompt, 1, temperature=0.0, max_tokens=7, stop=[])
    assert len(first.sequences) == 3
    assert all(s.tokens == first.sequences[0].tokens for s in first.sequences)
    assert second.sequences[0].tokens == first.sequences[0].tokens
    assert all(len(s.tokens) == 7 and s.stop_reason == "length" for s in first.sequences)
    assert len({s.sequence_id for s in first.sequences}) == 3


def test_seeded_sampling_repeats_and_stops_at_tokens_and_strings(base_sampler, tokenizer):
    prompt = tokenizer.encode(SENTENCES[1])[:5]
    drawn = sample(base_sampler, prompt, temperature=1.0, seed=7, max_tokens=10, stop=[]).sequences[0].tokens
    assert sample(base_sampler, prompt, temperature=1.0, seed=7, max_tokens=10, stop=[]).sequences[0].tokens == drawn
    assert len(set(drawn)) > 1

    stop_token = drawn[3]
    cut = drawn.index(stop_token)
    stopped = sample(base_sampler, prompt, temperature=1.0, seed=7, max_tokens=10, stop=[stop_token]).sequences[0]
    assert stopped.tokens == drawn[: cut + 1] and stopped.stop_reason == "stop"

    text = tokenizer.decode(drawn[:4])
    stop_string = text.strip()[-2:]
    assert stop_string.strip()
    end = next(i for i in range(len(drawn)) if stop_string in tokenizer.decode(drawn[: i + 1]))
    by_string = sample(base_sampler, prompt, temperature=1.0, seed=7, max_tokens=10, stop=[stop_string]).sequences[0]
    assert by_string.tokens == drawn[: end + 1] and by_string.stop_reason == "stop"
    assert end < len(drawn) - 1


def test_sampled_and_prompt_logprobs_match_the_training_forward_pass(service, base_sampler, tokenizer):
    prompt = tokenizer.encode(SENTENCES[2])
    result = base_sampler.sample(types.ModelInput.from_ints(prompt), 1,
                                 types.SamplingParams(temperature=1.0, seed=3, max_tokens=5, stop=[]),
                                 include_prompt_logprobs=True, topk_prompt_logprobs=3,
                                 topk_sample_logprobs=2).result(timeout=120)
    generated = result.sequences[0]
    full = prompt + generated.tokens
    client = new_client(service)  # a fresh adapter (B = 0) is the base model
    forward = logprobs_of(client.forward([datum(full)], "cross_entropy").result(timeout=60))[0]
    assert result.prompt_logprobs[0] is None
    np.testing.assert_allclose(result.prompt_logprobs[1:], forward[: len(prompt) - 1], atol=1e-4)
    np.testing.assert_allclose(generated.logprobs, forward[len(prompt) - 1:], atol=1e-4)
    assert base_sampler.compute_logprobs(types.ModelInput.from_ints(prompt)).result(timeout=120)[1:] == pytest.approx(
        result.prompt_logprobs[1:], abs=1e-6)

    top_prompt = result.topk_prompt_logprobs
    assert len(top_prompt) == len(prompt) and top_prompt[0] is None
    for row, actual in zip(top_prompt[1:], result.prompt_logprobs[1:], strict=True):
        values = [lp for _, lp in row]
        assert len(row) == 3 and values == sorted(values, reverse=True) and values[0] >= actual - 1e-5
    top_sampled = generated.topk_logprobs
    assert len(top_sampled) == len(generated.tokens)
    assert all(len(row) == 2 and row[0][1] >= lp - 1e-5 for row, lp in zip(top_sampled, generated.logprobs, strict=True))


def test_trained_weights_are_what_their_samplers_sample_from(service, batch, tokenizer, base_sampler):
    client = new_client(service, seed=5)
    for _ in range(3):
        client.forward_backward(batch, "cross_entropy")
        client.optim_step(adam(learning_rate=0.05))
    saved = client.save_weights_for_sampler("trained").result(timeout=60)
    by_path = service.create_sampling_client(model_path=saved.path).result(timeout=60)
    snapshot = client.save_weights_and_get_sampling_client().result(timeout=60)
    assert by_path.get_base_model() == "tiny-qwen"
    prompt = tokenizer.encode(SENTENCES[0])
    trained = logprobs_of(client.forward([datum(prompt)], "cross_entropy").result(timeout=60))[0]
    for sampler in (by_path, snapshot):
        scored = sampler.compute_logprobs(types.ModelInput.from_ints(prompt)).result(timeout=120)
        np.testing.assert_allclose(scored[1:], trained, atol=1e-4)
    base = base_sampler.compute_logprobs(types.ModelInput.from_ints(prompt)).result(timeout=120)
    assert not np.allclose(base[1:], trained, atol=1e-3)  # the adapter is applied
    client.forward_backward(batch, "cross_entropy")  # training on does not change a saved sampler
    client.optim_step(adam(learning_rate=0.05)).result(timeout=60)
    later = snapshot.compute_logprobs(types.ModelInput.from_ints(prompt)).result(timeout=120)
    np.testing.assert_allclose(later[1:], trained, atol=1e-4)


# ---------------------------------------------------------------- hostile requests: 4xx at once, the server serves on

NAN, INF = float("nan"), float("inf")


@pytest.fixture(scope="module")
def raw(server):
    with httpx.Client(base_url=f"{server.base_url}/api/v1", headers={"X-API-Key": KEY}, timeout=60) as http:
        yield http


def post(http, route: str, body, **headers) -> httpx.Response:
    """JSON as Python writes it: NaN and Infinity included, as a hostile client could send them."""
    return http.post(route, content=json.dumps(body).encode(), headers={"Content-Type": "application/json", **headers})


def retrieve(http, answer: httpx.Response) -> dict:
    assert answer.status_code == 200, answer.text
    deadline = time.monotonic() + 60
    while (result := http.post("/retrieve_future", json={"request_id": answer.json()["request_id"]}).json()).get(
            "type") == "try_again":
        assert time.monotonic() < deadline
    return result


def refused(answer: httpx.Response, status: int, fragment: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.json()["category"] == "user" and fragment in answer.json()["error"], answer.json()


def raw_datum(**inputs) -> dict:
    tensors = {"target_tokens": {"data": [6, 7, 8], "dtype": "int64"},
               "weights": {"data": [1.0, 1.0, 1.0], "dtype": "float32"}}
    return {"model_input": {"chunks": [{"type": "encoded_text", "tokens": [5, 6, 7]}]},
            "loss_fn_inputs": tensors | inputs}


class RawModel:
    """A training model driven over plain HTTP, its requests numbered as the SDK numbers them."""

    def __init__(self, http):
        session = http.post("/create_session", json={"tags": [], "user_metadata": None, "sdk_version": "x"})
        created = http.post("/create_model", json={"session_id": session.json()["session_id"], "model_seq_id": 0,
                                                   "base_model": "tiny-qwen", "lora_config": {"rank": 4}})
        assert retrieve(http, created)["type"] == "create_model"
        self.http, self.model_id, self.seq = http, created.json()["model_id"], itertools.count(1)

    def send(self, route: str, **body) -> httpx.Response:
        return post(self.http, route, {"model_id": self.model_id, "seq_id": next(self.seq), **body})

    def fwd(self, route: str = "/forward_backward", **extra) -> httpx.Response:
        key = "forward_backward_input" if route == "/forward_backward" else "forward_input"
        return self.send(route, **{key: {"loss_fn": "cross_entropy", "data": [raw_datum()]} | extra})

    def serves_on(self) -> None:
        """The server answers, and this model still trains to finite numbers: the refused requests used up
        their seq ids (nothing waits for them) and changed nothing."""
        assert self.http.get("/healthz").status_code == 200
        trained, step = self.fwd(), self.send("/optim_step", adam_params={"learning_rate": 0.01})
        assert math.isfinite(retrieve(self.http, trained)["metrics"]["loss:sum"])
        assert retrieve(self.http, step)["metrics"]["learning_rate:mean"] == 0.01
        after = retrieve(self.http, self.fwd("/forward"))
        assert np.isfinite(after["loss_fn_outputs"][0]["logprobs"]["data"]).all()


def test_non_finite_or_wrongly_typed_adam_params_are_refused_and_the_model_trains_on(raw):
    model = RawModel(raw)
    hostile = [({"learning_rate": NAN}, "learning_rate must be a finite number, got nan"),
               ({"learning_rate": INF}, "learning_rate must be a finite number, got inf"),
               ({"learning_rate": "nan"}, "learning_rate must be a number, got 'nan'"),
               ({"learning_rate": True}, "learning_rate must be a number, got True"),
               ({"learning_rate": 1e30}, "learning_rate must be in [0, 10]"),
               ({"beta1": NAN}, "beta1 must be a finite number"),
               ({"beta2": 1.0}, "beta2 must be in [0, 1)"),
               ({"eps": -INF}, "eps must be a finite number"),
               ({"eps": 0}, "eps must be in (0, 1]"),
               ({"weight_decay": "0.1"}, "weight_decay must be a number"),
               ({"grad_clip_norm": NAN}, "grad_clip_norm must be a finite number")]
    for params, fragment in hostile:
        refused(model.send("/optim_step", adam_params={"learning_rate": 1e-3} | params), 400, f"adam_params.{fragment}")
    model.serves_on()


def test_a_bad_loss_fn_config_answers_400_in_the_usual_shape(raw):
    model = RawModel(raw)
    rl = raw_datum(logprobs={"data": [-1.0, -1.0, -1.0], "dtype": "float32"},
                   advantages={"data": [1.0, 1.0, 1.0], "dtype": "float32"})
    refused(model.send("/forward_backward", forward_backward_input={
        "loss_fn": "dro", "loss_fn_config": {"beta": -1}, "data": [rl]}), 400,
        "loss_fn_config['beta'] must be 0 or more, got -1: fix the loss_fn_config of forward_backward")
    refused(model.send("/forward_backward", forward_backward_input={
        "loss_fn": "stable_reinforce", "data": [rl | {"model_input_spans": [{"sampled_tokens": {
            "sequence_id": "nope", "length": 3}}], "loss_fn_input_spans": [{"sampled_tokens": {
            "sequence_id": "nope", "length": 3}}]}]}), 400,
        "data[0].model_input_spans[0] names sequence 'nope', which this server has no stability record of")
    model.serves_on()


def test_model_shapes_and_ids_are_bounded_and_typed(raw, server):
    session = raw.post("/create_session", json={"tags": [], "user_metadata": None, "sdk_version": "x"}).json()

    def create(**fields) -> httpx.Response:
        return post(raw, "/create_model", {"session_id": session["session_id"], "model_seq_id": 0,
                                           "base_model": "tiny-qwen", "lora_config": {"rank": 4}} | fields)

    refused(create(model_seq_id="abc"), 400, "model_seq_id must be an integer, got 'abc'")
    refused(create(model_seq_id=-1), 400, "model_seq_id must be >= 0, got -1")
    refused(create(lora_config={"rank": 20_000_000}), 400, "lora_config.rank must be in [1, 256], got 20000000")
    hidden = server.service.bases["tiny-qwen"].hidden_size
    refused(create(lora_config={"rank": hidden + 1}), 400, f"more than tiny-qwen's hidden size {hidden}")
    refused(create(lora_config={"rank": "8"}), 400, "lora_config.rank must be an integer")
    refused(create(lora_config={"rank": 4, "seed": NAN}), 400, "lora_config.seed must be an integer")
    refused(create(lora_config={"rank": 4, "train_mlp": "false"}), 400, "lora_config.train_mlp must be true or false")
    refused(create(session_id=7), 400, "session_id must be a string")
    model = RawModel(raw)
    refused(post(raw, "/optim_step", {"model_id": model.model_id, "seq_id": "x", "adam_params": {}}), 400,
            "seq_id must be an integer, got 'x'")
    refused(post(raw, "/save_weights", {"model_id": model.model_id, "seq_id": next(model.seq), "ttl_seconds": "1"}),
            400, "ttl_seconds must be an integer")
    model.serves_on()


def test_datums_with_non_finite_or_malformed_tensors_are_refused(raw):
    model = RawModel(raw)
    hostile = [(raw_datum(weights={"data": [1.0, NAN, 1.0], "dtype": "float32"}), "has NaN or infinite values"),
               (raw_datum(weights=[1.0, INF, 1.0]), "has NaN or infinite values"),
               (raw_datum(weights={"data": ["a", "b", "c"], "dtype": "float32"}), "must be a list of numbers"),
               (raw_datum(weights={"data": [1.0], "dtype": "float32", "shape": [10**9, 10**9],
                                   "sparse_crow_indices": [0, 1], "sparse_col_indices": [0]}), "values per tensor"),
               (raw_datum(weights={"data": [1.0], "dtype": "float32", "shape": [1, 3],
                                   "sparse_crow_indices": [0, 1], "sparse_col_indices": [7]}), "not a valid sparse CSR"),
               (raw_datum(weights={"data": [1.0, 1.0, 1.0], "dtype": "float32", "shape": [-3]}), "non-negative"),
               (raw_datum() | {"model_input": {"chunks": [{"type": "encoded_text", "tokens": ["5"]}]}},
                "tokens must be a list of integers"),
               (raw_datum(target_tokens={"data": [6, 7, 10**9], "dtype": "int64"}), "outside tiny-qwen's vocabulary"),
               ({"model_input": {"chunks": [{"type": "encoded_text", "tokens": [5] * 1025}]},
                 "loss_fn_inputs": {"target_tokens": {"data": [5] * 1025, "dtype": "int64"}}},
                "has 1025 tokens, more than tiny-qwen's context of 1024")]
    for datum, fragment in hostile:
        refused(model.send("/forward_backward", forward_backward_input={"loss_fn": "cross_entropy", "data": [datum]}),
                400, fragment)
    refused(model.fwd(loss_fn_config={"clip_low_threshold": NAN}), 400, "loss_fn_config.clip_low_threshold must be a finite")
    model.serves_on()


def test_bodies_that_expand_past_the_bound_or_do_not_parse_are_refused(raw):
    import zstandard

    from thinker.tinker_serve.wire import MAX_BODY_BYTES, PROTOBUF

    model = RawModel(raw)
    compressor = zstandard.ZstdCompressor(level=1).compressobj()
    zeros = bytes(2**20)
    bomb = b"".join([compressor.compress(zeros) for _ in range(MAX_BODY_BYTES // len(zeros) + 1)] + [compressor.flush()])
    assert len(bomb) < 10_000  # a few kilobytes that expand past the bound
    headers = {"Content-Type": PROTOBUF, "Content-Encoding": "zstd"}
    refused(raw.post("/forward_backward", content=bomb, headers=headers), 413, f"more than {MAX_BODY_BYTES} bytes")
    refused(raw.post("/forward_backward", content=b"not zstd", headers=headers), 400, "not valid zstd")
    refused(raw.post("/create_session", content=b"[" * 100_000 + b"]" * 100_000), 400, "not JSON")
    model.serves_on()


def test_sampling_requests_are_typed_and_bounded(raw):
    def sample(**fields) -> httpx.Response:
        return post(raw, "/asample", {"base_model": "tiny-qwen", "num_samples": 1,
                                      "prompt": {"chunks": [{"type": "encoded_text", "tokens": [5, 6, 7]}]},
                                      "sampling_params": {"max_tokens": 3, "temperature": 0.0}} | fields)

    refused(sample(num_samples="2"), 400, "num_samples must be an integer")
    refused(sample(num_samples=100_000), 400, "num_samples must be in [1, 256]")
    refused(sample(topk_prompt_logprobs=10**6), 400, "topk_prompt_logprobs must be in [0, 100]")
    refused(sample(sampling_params={"temperature": NAN}), 400, "sampling_params.temperature must be a finite number")
    refused(sample(sampling_params={"max_tokens": "3"}), 400, "sampling_params.max_tokens must be an integer")
    refused(sample(sampling_params={"seed": 2**80}), 400, "sampling_params.seed must be in")
    refused(sample(sampling_params={"stop": 5}), 400, "stop must be None, a string")
    result = retrieve(raw, sample())
    assert result["type"] == "sample" and 1 <= len(result["sequences"][0]["tokens"]) <= 3


# ---------------------------------------------------------------- fault injection


def test_injected_503_and_429_are_retried_by_the_sdk(server, service, batch):
    reference = new_client(service, seed=6)
    ref_loss = reference.forward_backward(batch, "cross_entropy").result(timeout=60).metrics["loss:sum"]
    reference.optim_step(adam(learning_rate=0.05)).result(timeout=60)
    ref_after = reference.forward(batch, "cross_entropy").result(timeout=60).metrics["loss:sum"]

    faulty = new_client(service, seed=6)
    before = dict(server.faults.injected)
    server.faults.arm("forward_backward=503x2,optim_step=429x1")
    loss = faulty.forward_backward(batch, "cross_entropy").result(timeout=120).metrics["loss:sum"]
    faulty.optim_step(adam(learning_rate=0.05)).result(timeout=120)
    assert server.faults.injected.get("forward_backward", 0) - before.get("forward_backward", 0) == 2
    assert server.faults.injected.get("optim_step", 0) - before.get("optim_step", 0) == 1
    assert server.faults.remaining("forward_backward") == 0 and server.faults.remaining("optim_step") == 0
    assert loss == pytest.approx(ref_loss, rel=1e-6)
    assert faulty.forward(batch, "cross_entropy").result(timeout=60).metrics["loss:sum"] == pytest.approx(ref_after, rel=1e-6)


def test_fault_spec_parsing():
    from support.faults import FaultInjector, parse_faults

    faults = parse_faults("forward_backward=503x2, /api/v1/optim_step=429x1")
    assert {k: (f.status, f.remaining) for k, f in faults.items()} == {"forward_backward": (503, 2),
                                                                       "optim_step": (429, 1)}
    injector = FaultInjector("asample=500x1")
    assert [injector.take("asample"), injector.take("asample"), injector.take("other")] == [500, None, None]
    for bad in ("forward_backward=503", "x=200x1", "=503x1"):
        with pytest.raises(ValueError):
            parse_faults(bad)


# ---------------------------------------------------------------- CLI


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["tinker-serve", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--port", "--models", "--state-dir", "--device", "--dtype", "THINKER_SERVE_API_KEYS"):
        assert option in out
    assert "--faults" not in out  # fault injection is the tests' (tests/support/faults.py), not the product's


def test_cli_refuses_a_port_in_use_with_one_error_line(capsys, private_models_dir):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        code = main(["tinker-serve", "--port", str(port), "--models", "tiny-qwen"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [f"[thinker] error: port {port} on 127.0.0.1 is in use, --port {port}, stop the program that uses it, "
                   "or pick another port (--port 0 picks a free one)"]


def test_cli_refuses_an_unknown_model_with_one_error_line(capsys):
    code = main(["tinker-serve", "--port", "0", "--models", "tiny-qwen,nope"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("[thinker] error: unknown model 'nope', --models tiny-qwen,nope, choose from ")
    assert "tiny-qwen" in err[0].split("choose from", 1)[1]


def test_importing_the_cli_and_the_package_stays_light():
    script = textwrap.dedent("""
        import json, sys
        import thinker.commands.cli, thinker.tinker_serve, thinker.commands.tinker_serve
        thinker.commands.cli.build_parser()
        heavy = ("torch", "transformers", "peft", "fastapi", "uvicorn", "tinker")
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy)))
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


# ---------------------------------------------------------------- a real process, killed and restarted


@pytest.mark.slow
def test_a_killed_server_restarted_on_its_state_dir_continues_training(private_models_dir, tmp_path):
    from thinker.tinker_serve.server import spawn

    state = tmp_path / "state"
    env = dict(os.environ, THINKER_MODELS_DIR=str(private_models_dir))
    first = spawn(state_dir=state, env=env, cwd=tmp_path, extra_args=["--device", "cpu"])
    try:
        assert first.base_url.startswith("http://127.0.0.1:")
        assert f"serving tiny-qwen (state in {state})" in first.output
        client_a = tinker.ServiceClient(base_url=first.base_url, api_key=KEY)
        trainer = client_a.create_lora_training_client(base_model="tiny-qwen", rank=8, seed=0).result(timeout=60)
        tokens = trainer.get_tokenizer().encode(SENTENCES[0])
        data = [datum(tokens)]
        for _ in range(2):
            trainer.forward_backward(data, "cross_entropy")
            trainer.optim_step(adam(learning_rate=0.02))
        saved = trainer.save_state("before-crash").result(timeout=60).path
        at_save = trainer.forward(data, "cross_entropy").result(timeout=60).metrics["loss:sum"]
    finally:
        first.kill()
    assert first.proc.returncode == -9

    second = spawn(state_dir=state, env=env, cwd=tmp_path, extra_args=["--device", "cpu"])
    try:
        client_b = tinker.ServiceClient(base_url=second.base_url, api_key=KEY)
        resumed = client_b.create_training_client_from_state_with_optimizer(saved).result(timeout=60)
        assert resumed.forward(data, "cross_entropy").result(timeout=60).metrics["loss:sum"] == pytest.approx(at_save, rel=1e-6)
        losses = []
        for _ in range(3):
            fb = resumed.forward_backward(data, "cross_entropy")
            resumed.optim_step(adam(learning_rate=0.02))
            losses.append(fb.result(timeout=60).metrics["loss:sum"])
        assert losses[-1] < losses[0]
        runs = tinker.RestClient(base_url=second.base_url, api_key=KEY).list_checkpoints(trainer.model_id).result(timeout=30)
        assert [c.tinker_path for c in runs.checkpoints] == [saved]
        client_b.close("success").result(timeout=30)
    finally:
        assert second.stop() == 0  # SIGTERM: a clean exit
