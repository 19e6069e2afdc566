"""Small pieces of message wording shared by the error lines: an article for a name, and a "did you mean".

Standard library only: the config check and Hydra's error folding use it before anything heavy is imported.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

VOWEL_SOUNDS = "aeio"  # a `u` name (user, unsloth) and an `h` name (huggingface) take "a"


def with_article(word: object) -> str:
    """`an openai`, `a together`, `an assistant`: the article for a name built into a message."""
    text = str(word)
    return f"{'an' if text and text[0].lower() in VOWEL_SOUNDS else 'a'} {text}"


def closest(word: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """The candidates closest to `word` (difflib's ratio, at least 0.6), closest first."""
    return difflib.get_close_matches(word, list(candidates), n=n, cutoff=0.6)


def did_you_mean(word: str, candidates: Iterable[str], prefix: str = "") -> str:
    """`did you mean <prefix>lr? ` (`... or <prefix>lr_scale? `) for the closest candidates, "" when none is
    close. `prefix` is what the candidates are shown with (`optimizer.`, `model=`), not compared."""
    close = closest(word, candidates)
    return f"did you mean {' or '.join(prefix + name for name in close)}? " if close else ""
