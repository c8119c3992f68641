"""A recipe: which candidate sources to draw from and how many from each; `gather` runs one and merges the answers.

Written as text, ``"ann:100,covisit:100,popular:20"`` (the CLI's --sources, the manifest's default, REST's
``options.sources``) or built from pairs. The merge keeps each item once, in recipe order (everything the first
source found, then what the second added, ...), with the score of the first source that found it, and records
which sources found each item (``found_by``).

Usage::

    recipe = parse_recipe("ann:100,covisit:100")
    pool = gather(model.sources, recipe, session)
    pool.rows, pool.scores, pool.found_by[:, recipe.names.index("covisit")]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from recmesh.sources import Session, Source

KNOWN_SOURCES = ("ann", "covisit", "popular", "given", "slist")
MAX_COUNT = 1000  # per source, and for the whole recipe: the candidate cap of serving (serving.limits)


class RecipeError(ValueError):
    """A recipe that cannot run: empty, an unknown or unavailable source, a count out of range."""


@dataclass(frozen=True)
class Recipe:
    parts: tuple[tuple[str, int], ...]  # (source name, how many), in merge order

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.parts]

    @property
    def total(self) -> int:
        return sum(count for _, count in self.parts)

    def __str__(self) -> str:
        return ",".join(f"{name}:{count}" for name, count in self.parts)

    @classmethod
    def of(cls, parts: Iterable[tuple[str, int]], available: Iterable[str] = KNOWN_SOURCES) -> Recipe:
        """Checked: at least one part, each source known and available once, 1 <= count, total <= MAX_COUNT."""
        parts = tuple((str(name), int(count)) for name, count in parts)
        available = list(available)
        if not parts:
            raise RecipeError(f"the recipe is empty: name at least one source of {', '.join(available)}")
        seen: set[str] = set()
        for name, count in parts:
            if name not in KNOWN_SOURCES:
                raise RecipeError(f"unknown source {name!r}: valid sources are {', '.join(KNOWN_SOURCES)}")
            if name not in available:
                raise RecipeError(
                    f"source {name!r} is not in this bundle (it has {', '.join(available)}): train a new bundle"
                )
            if name in seen:
                raise RecipeError(f"source {name!r} appears twice in the recipe")
            seen.add(name)
            if not 1 <= count <= MAX_COUNT:
                raise RecipeError(f"count for {name!r} must be >= 1 and <= {MAX_COUNT}, got {count}")
        recipe = cls(parts)
        if recipe.total > MAX_COUNT:
            raise RecipeError(f"the recipe asks for {recipe.total} candidates in all, at most {MAX_COUNT}")
        return recipe


def parse_recipe(text: str, available: Iterable[str] = KNOWN_SOURCES) -> Recipe:
    """``"ann:100,covisit:100"`` -> Recipe; RecipeError naming the problem."""
    parts = []
    for chunk in (c.strip() for c in text.split(",")):
        if not chunk:
            continue
        name, sep, count = chunk.partition(":")
        if not sep or not count.strip().lstrip("-").isdigit():
            raise RecipeError(f"recipe part {chunk!r} is not source:count (e.g. ann:100,covisit:100)")
        parts.append((name.strip(), int(count)))
    return Recipe.of(parts, available)


@dataclass(frozen=True)
class Pool:
    rows: np.ndarray  # int64, merged, each once
    scores: np.ndarray  # float32: the score of the first source that found the row
    per_source: dict[str, np.ndarray]  # what each source answered, before the merge, in recipe order

    @property
    def found_by(self) -> np.ndarray:
        """(len(rows), number of sources) bool: which sources found each row (computed on demand: serving does
        not need it, the ranker recomputes every source's view from the session)."""
        if not self.per_source:
            return np.zeros((self.rows.size, 0), dtype=bool)
        return np.stack([np.isin(self.rows, found) for found in self.per_source.values()], axis=1)


def gather(sources: Mapping[str, Source], recipe: Recipe, session: Session) -> Pool:
    """Run every part of `recipe` and merge (see the module docstring)."""
    answers = [sources[name].candidates(session, count) for name, count in recipe.parts]
    all_rows = np.concatenate([rows for rows, _ in answers]) if answers else np.zeros(0, dtype=np.int64)
    all_scores = np.concatenate([scores for _, scores in answers]) if answers else np.zeros(0, dtype=np.float32)
    _, first = np.unique(all_rows, return_index=True)
    keep = np.sort(first)
    return Pool(
        all_rows[keep].astype(np.int64, copy=False),
        all_scores[keep].astype(np.float32, copy=False),
        {name: r for (name, _), (r, _) in zip(recipe.parts, answers, strict=True)},
    )
