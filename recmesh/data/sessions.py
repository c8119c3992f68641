"""The one in-memory shape every reader and the generator produce: time-ordered item sequences."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Dataset:
    """Time-ordered interaction sequences, one per user (or per session), item ids as strings.

    `filtered` counts what a reader dropped and why (e.g. {"blank line": 3, "session of length 1": 10}),
    so that nothing is dropped silently.
    """

    name: str
    users: list[str]
    sequences: list[list[str]]
    filtered: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        if len(self.users) != len(self.sequences):
            raise ValueError("users and sequences must have the same length")

    @property
    def n_interactions(self) -> int:
        return sum(len(s) for s in self.sequences)

    def items(self) -> set[str]:
        return {item for seq in self.sequences for item in seq}

    def summary(self) -> str:
        dropped = ", ".join(f"{n} {why}" for why, n in sorted(self.filtered.items())) or "nothing"
        return (
            f"{self.name}: {len(self.sequences):,} sequences, {len(self.items()):,} items, "
            f"{self.n_interactions:,} interactions; filtered: {dropped}"
        )
