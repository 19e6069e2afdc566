"""Loss masking and seed-001 loss weights on hand-made examples; packing and collation."""

from __future__ import annotations

import pytest

from thinker.data.examples import Example, split_examples
from thinker.data.packing import collate, pack_rows, single_rows
from thinker.data.tokenize import IGNORE_INDEX, LossWeights, TokenizedExample, render_prompt, tokenize_example


class CharTokenizer:
    """One token per character (ids = code points + 10), with offsets: makes expected weights checkable."""

    eos_token_id = 2

    def __call__(self, text, add_special_tokens=False, return_offsets_mapping=False):
        out = {"input_ids": [ord(c) + 10 for c in text]}
        if return_offsets_mapping:
            out["offset_mapping"] = [(i, i + 1) for i in range(len(text))]
        return out


PROMPT = "Hypothesis: x"
COMPLETION = "CLAIM[c1]: x\nCLAIM[c2] (Document 1): y\nRELATION: c2 supports c1"


def test_prompt_is_masked_and_completion_trained():
    ex = tokenize_example(CharTokenizer(), PROMPT, COMPLETION, max_length=1000)
    n_prompt = len(render_prompt(PROMPT))
    assert ex.labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert ex.labels[n_prompt:] == ex.input_ids[n_prompt:]
    assert ex.input_ids[-1] == CharTokenizer.eos_token_id
    assert all(w == 0.0 for w in ex.weights[:n_prompt])
    assert ex.trained_tokens == len(COMPLETION) + 1


def test_claim_and_evidence_lines_get_their_weights():
    ex = tokenize_example(CharTokenizer(), PROMPT, COMPLETION, max_length=1000,
                          weights=LossWeights(claim_c1=5.0, evidence=2.0))
    n_prompt = len(render_prompt(PROMPT))
    lines = COMPLETION.splitlines(keepends=True)
    w = ex.weights[n_prompt:]
    c1, ev, rel = len(lines[0]), len(lines[1]), len(lines[2])
    assert w[:c1] == [5.0] * c1  # CLAIM[c1] line, its newline included
    assert w[c1 : c1 + ev] == [2.0] * ev  # evidence claim line
    assert w[c1 + ev : c1 + ev + rel] == [1.0] * rel  # relation line
    assert w[-1] == 1.0  # end of sequence


def test_train_on_inputs_trains_prompt_but_never_the_first_token():
    ex = tokenize_example(CharTokenizer(), PROMPT, COMPLETION, max_length=1000, train_on_inputs=True)
    assert ex.labels[0] == IGNORE_INDEX and ex.labels[1:] == ex.input_ids[1:]


def test_truncation_is_flagged():
    ex = tokenize_example(CharTokenizer(), PROMPT, COMPLETION, max_length=20)
    assert ex.truncated and len(ex) == 20


def _ex(n: int, start: int = 100) -> TokenizedExample:
    ids = list(range(start, start + n))
    return TokenizedExample(ids, [IGNORE_INDEX] + ids[1:], [0.0] + [1.0] * (n - 1))


def test_packing_fits_rows_and_restarts_positions():
    examples = [_ex(6, 100), _ex(3, 200), _ex(5, 300), _ex(2, 400)]
    rows = pack_rows(examples, max_length=8)
    assert all(len(r) <= 8 for r in rows)
    assert sorted(t for r in rows for t in r.input_ids) == sorted(t for e in examples for t in e.input_ids)
    assert sum(r.n_examples for r in rows) == 4 and len(rows) == 2
    for r in rows:
        starts = [i for i, p in enumerate(r.position_ids) if p == 0]
        assert len(starts) == r.n_examples


def test_collate_packed_and_padded():
    rows = pack_rows([_ex(6), _ex(2), _ex(3)], max_length=8)
    batch = collate(rows, pad_id=0, packed=True)
    assert "attention_mask" not in batch and batch["position_ids"].shape == batch["input_ids"].shape
    short = min(rows, key=len)
    i = rows.index(short)
    pad = batch["input_ids"].shape[1] - len(short)
    if pad:
        assert batch["position_ids"][i, len(short):].tolist() == list(range(pad))
        assert (batch["labels"][i, len(short):] == IGNORE_INDEX).all()
    plain = collate(single_rows([_ex(4), _ex(2)]), pad_id=0, packed=False)
    assert plain["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]


def test_split_is_seeded_and_keeps_both_sides():
    exs = [Example(str(i), str(i)) for i in range(50)]
    a_train, a_val = split_examples(exs, 0.1, seed=1)
    b_train, b_val = split_examples(exs, 0.1, seed=1)
    assert a_val == b_val and len(a_val) == 5 and not set(a_val) & set(a_train)
    assert split_examples(exs, 0.1, seed=2)[1] != a_val
    assert split_examples(exs[:2], 0.1, seed=1)[1] and split_examples(exs[:2], 0.1, seed=1)[0]
    assert split_examples(exs, 0.0, seed=1)[1] == []


@pytest.mark.parametrize("kind", ["cosine", "linear", "constant", "constant_with_warmup", "polynomial"])
def test_schedules_warm_up_and_respect_the_floor(kind):
    from thinker.backends.schedules import lr_multiplier

    values = [lr_multiplier(s, 100, kind, warmup_ratio=0.1, min_lr_ratio=0.2) for s in range(100)]
    if kind == "constant":
        assert values == [1.0] * 100
        return
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert all(v >= 0.2 - 1e-9 for v in values[10:])
    if kind in ("cosine", "linear", "polynomial"):
        assert values[10] > values[50] > values[99] and values[99] == pytest.approx(0.2, abs=0.02)
    else:
        assert values[10:] == [1.0] * 90


def test_token_losses_match_a_manual_shifted_cross_entropy():
    import torch

    from thinker.backends.local.module import token_losses

    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[IGNORE_INDEX, 3, 4, IGNORE_INDEX, 1], [IGNORE_INDEX, 0, 6, 2, 5]])
    losses = token_losses(logits, labels)
    for b in range(2):
        for t in range(4):
            target = int(labels[b, t + 1])
            expected = 0.0 if target == IGNORE_INDEX else float(-torch.log_softmax(logits[b, t], -1)[target])
            assert float(losses[b, t]) == pytest.approx(expected, abs=1e-5)
    assert losses[:, -1].tolist() == [0.0, 0.0]  # the last position predicts nothing


def test_each_epoch_gets_a_new_order_and_resume_skips_served_batches():
    from thinker.backends.local.datamodule import ResumableLoader

    rows = single_rows([_ex(3, 10 * i) for i in range(12)])
    epoch = {"now": 0}
    loader = ResumableLoader(rows, 4, 0, packed=False, seed=1, shuffle=True, current_epoch=lambda: epoch["now"])
    first = [b["input_ids"][:, 0].tolist() for b in loader]
    epoch["now"] = 1
    second = [b["input_ids"][:, 0].tolist() for b in loader]
    assert first != second and sorted(sum(first, [])) == sorted(sum(second, []))
    loader.load_state_dict({"epoch": 1, "processed": 2})
    assert [b["input_ids"][:, 0].tolist() for b in loader] == second[2:]
