"""Character-level similarity and a trigram index to find near spellings fast.

Speech recognisers mostly get words slightly wrong ("crome", "fire fox", "pose" for "pause"),
so fuzzy matching compares words by edit distance. Comparing a heard word with every list entry
would be too slow for big lists; the trigram index narrows 5000 entries to a handful first.
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable

_LOGGER = logging.getLogger(__name__)

PAD_START, PAD_END = "^", "$"
"""Padding so first and last letters get trigrams of their own ("^up", "up$")."""

MIN_DICE = 0.2
"""Share of trigrams (Dice coefficient) two strings need before their edit distance is worked
out. One typo changes at most three trigrams, so similar words stay well above it."""


@functools.lru_cache(maxsize=1 << 16)
def similarity(a: str, b: str) -> float:
    """1 - Levenshtein(a, b) / longer length: 1.0 equal, 0.0 nothing in common."""
    if a == b:
        return 1.0
    if not a or not b:
        return 0.0
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b))
            )
        previous = current
    return 1.0 - previous[-1] / len(a)


def trigrams(text: str) -> set[str]:
    padded = PAD_START + text + PAD_END
    return {padded[i : i + 3] for i in range(len(padded) - 2)}


class TrigramIndex:
    """Strings indexed by their character trigrams; `nearest` finds the most similar ones."""

    def __init__(self, strings: Iterable[str]) -> None:
        self.strings = tuple(strings)
        postings: defaultdict[str, list[int]] = defaultdict(list)
        sizes = []
        for index, text in enumerate(self.strings):
            grams = trigrams(text)
            sizes.append(len(grams))
            for gram in grams:
                postings[gram].append(index)
        self._postings = dict(postings)
        self._sizes = sizes

    def nearest(self, text: str, min_similarity: float, limit: int) -> list[tuple[int, float]]:
        """Up to `limit` (index, similarity) pairs with similarity >= min_similarity, best first.

        Only strings sharing the most trigrams with `text` are compared in full (4 x limit),
        and only if they share at least MIN_DICE of their trigrams.
        """
        grams = trigrams(text)
        postings = [self._postings[gram] for gram in grams if gram in self._postings]
        if not postings:
            return []
        counts = Counter(itertools.chain.from_iterable(postings))
        scored = []
        for index, shared in counts.most_common(4 * limit):
            if 2 * shared < MIN_DICE * (len(grams) + self._sizes[index]):
                continue
            score = similarity(text, self.strings[index])
            if score >= min_similarity:
                scored.append((index, score))
        scored.sort(key=lambda pair: (-pair[1], pair[0]))
        return scored[:limit]
