"""The prompt/completion text format for SciFact-style claim extraction: the one place that defines it.

Everything that writes or reads these texts (the sample-data generator, the SciFact converter, the tokenizer's
loss weighting, evaluation) imports the strings and builders below instead of repeating them.
Standard library only: composing and validating a config must not pull in torch.

Prompt::

    Extract the claims from the hypothesis and the cited abstracts.

    Hypothesis: <claim text>

    Document <doc_id>: <title>
    <abstract sentences joined by a single space>

Completion (all CLAIM lines, then all RELATION lines in the same order)::

    CLAIM[c1]: <claim text>
    CLAIM[c2] (Document <doc_id>): <evidence sentence verbatim>
    RELATION: c2 supports c1
"""

from __future__ import annotations

INSTRUCTION = "Extract the claims from the hypothesis and the cited abstracts."
HYPOTHESIS_PREFIX = "Hypothesis: "
DOCUMENT_PREFIX = "Document "

CLAIM_PREFIX = "CLAIM["
C1_LINE_PREFIX = "CLAIM[c1]:"
RELATION_PREFIX = "RELATION:"

SUPPORT = "SUPPORT"
CONTRADICT = "CONTRADICT"
# SciFact's labels -> the verb written on a RELATION line.
RELATION_VERBS = {SUPPORT: "supports", CONTRADICT: "refutes"}

Evidence = tuple[int, str, str]  # (doc_id, sentence text, label)


def claim_id(index: int) -> str:
    """Short id of the claim line at `index` (0 -> "c1", the hypothesis; 1 -> "c2", the first evidence)."""
    return f"c{index + 1}"


def build_prompt(claim_text: str, docs: list[dict]) -> str:
    """The prompt: instruction, hypothesis, then each cited document (in the order given)."""
    blocks = [INSTRUCTION, HYPOTHESIS_PREFIX + claim_text]
    for doc in docs:
        blocks.append(f"{DOCUMENT_PREFIX}{doc['doc_id']}: {doc['title']}\n{' '.join(doc['abstract'])}")
    return "\n\n".join(blocks)


def build_completion(claim_text: str, evidence: list[Evidence]) -> str:
    """The target: the hypothesis as c1, evidence sentences as c2, c3, ..., then one RELATION per evidence."""
    lines = [f"{C1_LINE_PREFIX} {claim_text}"]
    relations = []
    for index, (doc_id, sentence, label) in enumerate(evidence, start=1):
        # Look the verb up first so an unknown label fails before anything is written.
        verb = RELATION_VERBS[label]
        lines.append(f"{CLAIM_PREFIX}{claim_id(index)}] ({DOCUMENT_PREFIX}{doc_id}): {sentence}")
        relations.append(f"{RELATION_PREFIX} {claim_id(index)} {verb} {claim_id(0)}")
    return "\n".join(lines + relations)


def scifact_evidence(claim: dict, corpus: dict[int, dict]) -> list[Evidence]:
    """A SciFact claim's evidence in completion order: cited docs, evidence sets, then sentence indices."""
    evidence_by_doc = claim["evidence"]
    cited = [str(doc_id) for doc_id in claim["cited_doc_ids"]]
    for doc_key in evidence_by_doc:
        if doc_key not in cited:
            # Evidence in an uncited document would silently vanish from the completion.
            raise KeyError(f"evidence document {doc_key} is not in cited_doc_ids of claim {claim['id']}")
    items: list[Evidence] = []
    for doc_key in cited:
        abstract = corpus[int(doc_key)]["abstract"] if doc_key in evidence_by_doc else []
        for evidence_set in evidence_by_doc.get(doc_key, []):
            for index in sorted(evidence_set["sentences"]):
                if index < 0:
                    # Python would wrap a negative index around to the end of the abstract.
                    raise IndexError(f"negative sentence index {index} in document {doc_key}")
                items.append((int(doc_key), abstract[index], evidence_set["label"]))
    return items


def example_from_scifact(claim: dict, corpus: dict[int, dict]) -> dict:
    """One prompt/completion example from a claim in SciFact's release format and the corpus keyed by doc_id.

    metadata: claim_id, doc_ids (the cited documents, in prompt order) and labels (one per evidence line,
    aligned with c2, c3, ...). Unknown doc ids raise KeyError, bad sentence indices IndexError.
    """
    docs = [corpus[doc_id] for doc_id in claim["cited_doc_ids"]]
    evidence = scifact_evidence(claim, corpus)
    return {
        "prompt": build_prompt(claim["claim"], docs),
        "completion": build_completion(claim["claim"], evidence),
        "metadata": {
            "claim_id": claim["id"],
            "doc_ids": list(claim["cited_doc_ids"]),
            "labels": [label for _, _, label in evidence],
        },
    }
