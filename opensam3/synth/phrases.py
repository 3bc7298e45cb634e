"""Noun phrases at several specificities, with exhaustive positives and hard/easy negatives.

A phrase is a `Concept`: a shape noun plus any subset of {size, pattern, colour}, written in
that order: "star", "red star", "striped star", "small striped red star". Its specificity is the
number of words (1-4). A concept matches EVERY object whose attributes agree on all the words it
has ("red star" matches red stars of any size and pattern), so a positive pair's instances are
exactly `[o for o in objects if concept.matches(o)]` (exhaustive by construction).

Negatives match no object of the scene (or of any frame of a clip):
- hard: one word of a present object's description swapped for another value, so the image
  holds something close ("blue star" when only red stars exist, "large red star" when the
  red stars are small, "red heart" next to a red star);
- easy: a shape that does not occur at all, alone or with one random attribute.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from opensam3.synth.world import COLORS, PATTERNS, SHAPES, SIZES, SceneObject

ATTRIBUTE_ORDER: tuple[str, ...] = ("size", "pattern", "color")  # words before the shape noun
_VOCABULARY: dict[str, tuple[str, ...]] = {
    "shape": SHAPES, "color": tuple(COLORS), "size": tuple(SIZES), "pattern": PATTERNS,
}
HARD_NEGATIVE_SHARE = 2 / 3  # of the negatives; the rest are easy


@dataclass(frozen=True)
class Concept:
    """A shape with optional attribute constraints (None = any)."""

    shape: str
    size: str | None = None
    pattern: str | None = None
    color: str | None = None

    @property
    def phrase(self) -> str:
        words = [getattr(self, name) for name in ATTRIBUTE_ORDER]
        return " ".join([w for w in words if w is not None] + [self.shape])

    @property
    def specificity(self) -> int:
        return 1 + sum(getattr(self, name) is not None for name in ATTRIBUTE_ORDER)

    def matches(self, obj: SceneObject) -> bool:
        return obj.shape == self.shape and all(
            getattr(self, name) is None or getattr(self, name) == getattr(obj, name) for name in ATTRIBUTE_ORDER
        )

    def attributes(self) -> dict[str, str | None]:
        return {"shape": self.shape, "size": self.size, "pattern": self.pattern, "color": self.color}


@dataclass(frozen=True)
class PhraseQuery:
    """A concept asked of a scene; `negative` is None for positives, else "hard" or "easy"."""

    concept: Concept
    negative: str | None = None

    @property
    def phrase(self) -> str:
        return self.concept.phrase


def concept_of(obj: SceneObject, words: Iterable[str]) -> Concept:
    """The concept naming `obj` by its shape and the given attribute words."""
    chosen = set(words)
    return Concept(obj.shape, *(getattr(obj, name) if name in chosen else None for name in ATTRIBUTE_ORDER))


def positive_concepts(objects: Sequence[SceneObject]) -> list[Concept]:
    """Every concept at least one object satisfies (sorted, so sampling is deterministic)."""
    found = set()
    for obj in objects:
        for count in range(len(ATTRIBUTE_ORDER) + 1):
            for words in itertools.combinations(ATTRIBUTE_ORDER, count):
                found.add(concept_of(obj, words))
    return sorted(found, key=lambda c: (c.shape, c.size or "", c.pattern or "", c.color or ""))


def is_absent(concept: Concept, objects: Sequence[SceneObject]) -> bool:
    return not any(concept.matches(o) for o in objects)


def _pick(rng: np.random.Generator, items: Sequence):
    return items[int(rng.integers(len(items)))]


def hard_negative(rng: np.random.Generator, objects: Sequence[SceneObject], tries: int = 30) -> Concept | None:
    """Describe a present object, then swap one word for another value absent in that role."""
    for _ in range(tries):
        obj = _pick(rng, objects)
        words = [w for w in ATTRIBUTE_ORDER if rng.random() < 0.5]
        concept = concept_of(obj, words)
        role = _pick(rng, list(words) + ["shape"])
        options = [value for value in _VOCABULARY[role] if value != getattr(obj, role)]
        swapped = Concept(**{**concept.attributes(), role: _pick(rng, options)})
        # A swapped shape alone would be an easy negative; keep at least one shared attribute.
        if role == "shape" and swapped.specificity == 1:
            continue
        if is_absent(swapped, objects):
            return swapped
    return None


def easy_negative(rng: np.random.Generator, objects: Sequence[SceneObject]) -> Concept | None:
    """A shape that does not occur, alone or with one random attribute."""
    present = {o.shape for o in objects}
    missing = [s for s in SHAPES if s not in present]
    if not missing:
        return None
    attributes = {"shape": _pick(rng, missing), "size": None, "pattern": None, "color": None}
    if rng.random() < 0.5:
        role = _pick(rng, ATTRIBUTE_ORDER)
        attributes[role] = _pick(rng, _VOCABULARY[role])
    return Concept(**attributes)


def sample_queries(
    rng: np.random.Generator, objects: Sequence[SceneObject], count: int, negative_fraction: float
) -> list[PhraseQuery]:
    """`count` distinct phrases: ceil(count * negative_fraction) negatives, the rest positives
    spread over specificities (a level is drawn uniformly, then a concept of that level with
    probability proportional to its number of instances).
    With too few positive concepts the remainder are negatives."""
    num_negatives = min(count, math.ceil(count * negative_fraction - 1e-9))
    by_level: dict[int, list[Concept]] = {}
    for concept in positive_concepts(objects):
        by_level.setdefault(concept.specificity, []).append(concept)
    queries: list[PhraseQuery] = []
    used: set[Concept] = set()
    while len(queries) < count - num_negatives and by_level:
        level = _pick(rng, sorted(by_level))
        # Favour phrases with several instances (weight = instance count): finding *every*
        # match is the skill the data must teach, and most specific phrases have only one.
        weights = np.array([sum(c.matches(o) for o in objects) for c in by_level[level]], dtype=np.float64)
        concept = by_level[level].pop(int(rng.choice(len(weights), p=weights / weights.sum())))
        if not by_level[level]:
            del by_level[level]
        queries.append(PhraseQuery(concept))
        used.add(concept)
    attempts = 0
    while len(queries) < count and attempts < 20 * count:
        attempts += 1
        kind = "hard" if rng.random() < HARD_NEGATIVE_SHARE else "easy"
        concept = hard_negative(rng, objects) if kind == "hard" else easy_negative(rng, objects)
        if concept is not None and concept not in used:
            queries.append(PhraseQuery(concept, negative=kind))
            used.add(concept)
    return queries
