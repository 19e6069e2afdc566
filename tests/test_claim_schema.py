"""The claim schema: parse model output robustly, format canonically, round-trip exactly."""

from __future__ import annotations

import json

from conftest import ROOT
from hypothesis import given
from hypothesis import strategies as st

from thinker.evaluation.claim_schema import Claim, ClaimSet, Relation, format_claims, parse_claims

COMPLETION = ("CLAIM[c1]: Smoking causes cancer.\n"
              "CLAIM[c2] (Document 11): Smoking raises cancer risk.\n"
              "CLAIM[c3] (Document 22): No effect was found.\n"
              "RELATION: c2 supports c1\n"
              "RELATION: c3 refutes c1")


def test_parses_the_canonical_format():
    parsed = parse_claims(COMPLETION)
    assert parsed.claims == (Claim("c1", "Smoking causes cancer."), Claim("c2", "Smoking raises cancer risk.", "11"),
                             Claim("c3", "No effect was found.", "22"))
    assert parsed.relations == (Relation("c2", "supports", "c1"), Relation("c3", "refutes", "c1"))
    assert parsed.hypothesis.text == "Smoking causes cancer." and [c.id for c in parsed.evidence] == ["c2", "c3"]
    assert format_claims(parsed) == COMPLETION


def test_tolerates_whitespace_case_order_and_garbage():
    messy = ("Sure! Here are the claims:\n"
             "  relation :  C2   SUPPORTS   c1  \r\n"
             "random noise line\n"
             ">> claim [ C2 ]  ( Document   11 ) :   Smoking raises cancer risk.   \n"
             "\n"
             "CLAIM[c1]:Smoking causes cancer.\n"
             "RELATION: c9 maybe c1\n"  # unknown verb: not a relation
             "CLAIM[cX]: not an id\n"
             "<eos> trailing garbage")
    parsed = parse_claims(messy)
    assert parsed.claims == (Claim("c2", "Smoking raises cancer risk.", "11"), Claim("c1", "Smoking causes cancer."))
    assert parsed.relations == (Relation("c2", "supports", "c1"),)
    # canonical form: claims in order of appearance, then relations
    assert format_claims(parsed) == ("CLAIM[c2] (Document 11): Smoking raises cancer risk.\n"
                                     "CLAIM[c1]: Smoking causes cancer.\nRELATION: c2 supports c1")


def test_missing_lines_and_empty_text():
    assert parse_claims("") == ClaimSet()
    assert parse_claims("the model rambled without any structure") == ClaimSet()
    only_relation = parse_claims("RELATION: c2 refutes c1")
    assert only_relation.hypothesis is None and only_relation.relations == (Relation("c2", "refutes", "c1"),)


def test_first_claim_wins_for_a_repeated_id():
    parsed = parse_claims("CLAIM[c1]: first\nCLAIM[c1]: second")
    assert parsed.hypothesis.text == "first" and len(parsed.claims) == 2


def test_every_shipped_completion_round_trips():
    for name in ("claims.jsonl", "dev.jsonl"):
        for line in (ROOT / "data" / "sample" / name).read_text().splitlines():
            completion = json.loads(line)["completion"]
            assert format_claims(parse_claims(completion)) == completion


# Texts as a model or a corpus could hold them: any printable characters on one line, no edge whitespace.
_text = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=60).map(str.strip)
_ids = st.integers(1, 40).map(lambda n: f"c{n}")
_claims = st.builds(Claim, _ids, _text, st.none() | st.from_regex(r"[A-Za-z0-9_.-]{1,12}", fullmatch=True))
_relations = st.builds(Relation, _ids, st.sampled_from(["supports", "refutes"]), _ids)
_claim_sets = st.builds(ClaimSet, st.lists(_claims, max_size=6).map(tuple), st.lists(_relations, max_size=6).map(tuple))


@given(_claim_sets)
def test_format_parse_format_round_trip(claims):
    text = format_claims(claims)
    assert parse_claims(text) == claims
    assert format_claims(parse_claims(text)) == text


@given(_claim_sets, st.lists(st.text(alphabet="xyz !?.:#", max_size=20), max_size=6))
def test_garbage_lines_in_between_change_nothing(claims, garbage):
    lines = format_claims(claims).split("\n") if claims.claims or claims.relations else []
    mixed = []
    for i, line in enumerate(lines):
        mixed += [garbage[i % len(garbage)]] if garbage else []
        mixed.append(line)
    assert parse_claims("\n".join(mixed + garbage)) == claims
