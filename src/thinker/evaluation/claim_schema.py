"""Parse completions in the claim format (thinker.data.claim_format) into typed claims and relations, and
write them back in the canonical format.

Parsing is forgiving because model output is: keywords in any case, extra whitespace, lines in any order,
missing lines, and any garbage before a `CLAIM[...]` / `RELATION:` marker or on lines of its own are all
accepted (the garbage is dropped). Formatting is canonical: every CLAIM line in order, then every RELATION
line, exactly as claim_format.build_completion writes them, so format -> parse -> format is the identity.
Standard library only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from thinker.data.claim_format import CLAIM_PREFIX, DOCUMENT_PREFIX, RELATION_PREFIX, RELATION_VERBS

HYPOTHESIS_ID = "c1"
VERBS = tuple(RELATION_VERBS.values())  # ("supports", "refutes")

_CLAIM = re.compile(
    r"CLAIM\s*\[\s*(?P<id>c\d+)\s*\]\s*(?:\(\s*Document\s+(?P<doc>[^()\s]+)\s*\)\s*)?:[ \t]*(?P<text>.*)",
    re.IGNORECASE,
)
_RELATION = re.compile(
    r"RELATION\s*:\s*(?P<source>c\d+)\s+(?P<verb>" + "|".join(VERBS) + r")\s+(?P<target>c\d+)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Claim:
    id: str  # "c1" is the hypothesis, "c2", "c3", ... evidence
    text: str
    document: str | None = None  # the cited document id, for evidence claims

    def format(self) -> str:
        citation = f" ({DOCUMENT_PREFIX}{self.document})" if self.document is not None else ""
        return f"{CLAIM_PREFIX}{self.id}]{citation}: {self.text}"


@dataclass(frozen=True)
class Relation:
    source: str
    verb: str  # "supports" | "refutes"
    target: str

    def format(self) -> str:
        return f"{RELATION_PREFIX} {self.source} {self.verb} {self.target}"


@dataclass(frozen=True)
class ClaimSet:
    claims: tuple[Claim, ...] = ()
    relations: tuple[Relation, ...] = ()

    def claim(self, claim_id: str) -> Claim | None:
        """The first claim with this id (a model may repeat ids; the first one counts)."""
        return next((c for c in self.claims if c.id == claim_id), None)

    @property
    def hypothesis(self) -> Claim | None:
        return self.claim(HYPOTHESIS_ID)

    @property
    def evidence(self) -> tuple[Claim, ...]:
        return tuple(c for c in self.claims if c.id != HYPOTHESIS_ID)

    def to_dict(self) -> dict[str, list[dict[str, str | None]]]:
        return {
            "claims": [{"id": c.id, "text": c.text, "document": c.document} for c in self.claims],
            "relations": [{"source": r.source, "verb": r.verb, "target": r.target} for r in self.relations],
        }


@dataclass
class _Collected:
    claims: list[Claim] = field(default_factory=list)
    relations: list[Relation] = field(default_factory=list)


def parse_claims(text: str) -> ClaimSet:
    """Every CLAIM and RELATION line found in `text`, in order of appearance; anything else is ignored."""
    found = _Collected()
    for line in text.split("\n"):
        claim = _CLAIM.search(line)
        if claim:
            found.claims.append(Claim(claim["id"].lower(), claim["text"].strip(), claim["doc"]))
            continue
        relation = _RELATION.search(line)
        if relation:
            found.relations.append(
                Relation(relation["source"].lower(), relation["verb"].lower(), relation["target"].lower())
            )
    return ClaimSet(tuple(found.claims), tuple(found.relations))


def format_claims(claims: ClaimSet) -> str:
    """The canonical completion text: all CLAIM lines, then all RELATION lines (claim_format's layout)."""
    return "\n".join([c.format() for c in claims.claims] + [r.format() for r in claims.relations])
