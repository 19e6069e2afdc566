"""Read SciFact's release format (claims_*.jsonl + corpus.jsonl) and turn it into prompt/completion records.

The text format itself lives in thinker.data.claim_format (example_from_scifact); this module only reads,
checks and writes. Every problem in the input becomes a one-line ThinkerError naming the file and line, and
output is written atomically, so a failed conversion leaves no half-written file behind.
Standard library only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thinker.data.claim_format import RELATION_VERBS, example_from_scifact
from thinker.errors import ThinkerError
from thinker.errors.json_lines import parse_problem
from thinker.paths import not_a_regular_file
from thinker.tracking.atomic import atomic_write


@dataclass(frozen=True)
class ScifactClaim:
    """A claim as read from a claims file, with where it came from (for error messages)."""

    record: dict[str, Any]
    line: int


def _fail(what: str, path: Path, line: int | None, fix: str, stage: str) -> ThinkerError:
    where = f"{path}:{line}" if line is not None else str(path)
    return ThinkerError(what, where, fix, stage=stage)


def _json_lines(path: Path, stage: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; malformed JSON or a non-object stops with its line."""
    kind = not_a_regular_file(path)  # a named pipe would block here forever
    if kind is not None:
        raise _fail(f"is {kind}, not a regular file", path, None, "pass a regular file", stage)
    if not path.is_file():
        raise _fail("file not found", path, None, "check the path", stage)
    with open(path, encoding="utf-8-sig") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except (ValueError, RecursionError) as exc:
                raise _fail(f"malformed {parse_problem(exc, line).removeprefix('invalid ')}", path, number,
                            "fix or remove that line", stage) from None
            if not isinstance(obj, dict):
                raise _fail(f"expected a JSON object, got {type(obj).__name__}", path, number,
                            "write one object per line", stage)
            yield number, obj


def _require(obj: dict, fields: dict[str, type | tuple[type, ...]], path: Path, line: int, stage: str) -> None:
    for name, kind in fields.items():
        if name not in obj:
            raise _fail(f"missing field {name!r}", path, line, "add it (SciFact release format)", stage)
        # bool is an int subclass; a true/false doc id is a typo, not an id
        if not isinstance(obj[name], kind) or isinstance(obj[name], bool):
            raise _fail(f"field {name!r} has the wrong type ({type(obj[name]).__name__})", path, line,
                        "use the SciFact release format", stage)


def read_corpus(path: str | Path, stage: str = "validate") -> dict[int, dict[str, Any]]:
    """corpus.jsonl keyed by doc_id; each record holds doc_id, title and abstract (a list of sentences)."""
    path = Path(path)
    corpus: dict[int, dict[str, Any]] = {}
    for line, doc in _json_lines(path, stage):
        _require(doc, {"doc_id": int, "title": str, "abstract": list}, path, line, stage)
        if not all(isinstance(s, str) for s in doc["abstract"]):
            raise _fail("abstract must be a list of sentence strings", path, line, "fix that record", stage)
        if doc["doc_id"] in corpus:
            raise _fail(f"duplicate doc_id {doc['doc_id']}", path, line, "keep one record per document", stage)
        corpus[doc["doc_id"]] = doc
    return corpus


def read_claims(path: str | Path, stage: str = "validate", limit: int | None = None) -> list[ScifactClaim]:
    """The claims of a claims_*.jsonl file in file order (at most `limit`), structurally checked."""
    path = Path(path)
    claims: list[ScifactClaim] = []
    for line, claim in _json_lines(path, stage):
        _require(claim, {"id": int, "claim": str, "evidence": dict, "cited_doc_ids": list}, path, line, stage)
        claims.append(ScifactClaim(claim, line))
        if limit is not None and len(claims) >= limit:
            break
    return claims


def check_claim(claim: ScifactClaim, corpus: dict[int, dict], path: Path, stage: str) -> None:
    """Every reference in a claim must point at something real: doc ids, sentence indices, labels."""
    record, line = claim.record, claim.line
    cited = record["cited_doc_ids"]
    for doc_id in cited:
        if not isinstance(doc_id, int) or isinstance(doc_id, bool) or doc_id not in corpus:
            raise _fail(f"claim {record['id']} cites unknown doc id {doc_id!r} (not in the corpus)", path, line,
                        "fix the id or use the corpus file this claims file belongs to", stage)
    for doc_key, evidence_sets in record["evidence"].items():
        if not str(doc_key).lstrip("-").isdigit() or int(doc_key) not in corpus:
            raise _fail(f"claim {record['id']} has evidence in unknown doc id {doc_key!r}", path, line,
                        "fix the id or use the matching corpus file", stage)
        if int(doc_key) not in cited:
            raise _fail(f"claim {record['id']} has evidence in doc {doc_key}, which is not in cited_doc_ids", path,
                        line, "add the doc to cited_doc_ids", stage)
        if not isinstance(evidence_sets, list):
            raise _fail(f"evidence of doc {doc_key} must be a list of evidence sets", path, line,
                        "use the SciFact release format", stage)
        n_sentences = len(corpus[int(doc_key)]["abstract"])
        for evidence_set in evidence_sets:
            if not isinstance(evidence_set, dict) or not isinstance(evidence_set.get("sentences"), list):
                raise _fail(f"an evidence set of doc {doc_key} has no 'sentences' list", path, line,
                            "use {\"sentences\": [...], \"label\": ...}", stage)
            label = evidence_set.get("label")
            if label not in RELATION_VERBS:
                raise _fail(f"evidence label {label!r} in doc {doc_key} is not one of {sorted(RELATION_VERBS)}",
                            path, line, "fix the label", stage)
            for index in evidence_set["sentences"]:
                if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < n_sentences:
                    raise _fail(f"bad sentence index {index!r} for doc {doc_key} (its abstract has {n_sentences} "
                                f"sentences)", path, line, f"use indices 0..{n_sentences - 1}", stage)


def scifact_examples(claims_path: str | Path, corpus_path: str | Path, *, stage: str = "validate",
                     limit: int | None = None) -> list[tuple[ScifactClaim, dict]]:
    """(claim, prompt/completion example) pairs, every claim checked against the corpus first."""
    claims_path = Path(claims_path)
    corpus = read_corpus(corpus_path, stage)
    pairs = []
    for claim in read_claims(claims_path, stage, limit):
        check_claim(claim, corpus, claims_path, stage)
        pairs.append((claim, example_from_scifact(claim.record, corpus)))
    return pairs


def convert_scifact(claims_path: str | Path, corpus_path: str | Path, out: str | Path,
                    *, stage: str = "validate") -> int:
    """Write the prompt/completion JSONL for a claims file to `out` atomically; returns the record count.

    Everything is checked before the first byte is written, so a bad input leaves `out` untouched.
    """
    pairs = scifact_examples(claims_path, corpus_path, stage=stage)
    text = "".join(json.dumps(example, ensure_ascii=False) + "\n" for _claim, example in pairs)
    atomic_write(out, lambda fh: fh.write(text.encode("utf-8")))
    return len(pairs)
