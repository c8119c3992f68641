"""Synthetic generator: seeded, sized as asked, realistic (skewed, sequential) and round-trips to disk."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from recmesh.data.readers import read_sessions, read_user_lines
from recmesh.data.sessions import Dataset
from recmesh.data.synth import generate, write_user_lines


@pytest.fixture(scope="module")
def data() -> Dataset:
    return generate(n_items=2000, n_users=5000, seed=7)


def test_seeded_determinism() -> None:
    a = generate(n_items=300, n_users=500, seed=1)
    b = generate(n_items=300, n_users=500, seed=1)
    c = generate(n_items=300, n_users=500, seed=2)
    assert a.users == b.users
    assert a.sequences == b.sequences
    assert a.sequences != c.sequences


def test_sizes_and_ids(data: Dataset) -> None:
    assert data.name == "synth"
    assert data.users == [f"u{k}" for k in range(5000)]
    items = data.items()
    assert items <= {f"i{k}" for k in range(2000)}
    assert len(items) > 1500  # most of the catalogue is used, not just the head
    lengths = np.array([len(s) for s in data.sequences])
    assert 7.5 < lengths.mean() < 8.5
    assert lengths.min() >= 3


def test_min_length_three_and_no_immediate_repeats(data: Dataset) -> None:
    assert all(len(s) >= 3 for s in data.sequences)
    assert all(a != b for s in data.sequences for a, b in zip(s, s[1:], strict=False))


@pytest.mark.parametrize("n_items", [2, 3, 5, 17])
def test_tiny_catalogues_still_avoid_repeats(n_items: int) -> None:
    ds = generate(n_items=n_items, n_users=200, mean_length=6.0, seed=3)
    assert ds.items() <= {f"i{k}" for k in range(n_items)}
    assert all(len(s) >= 3 for s in ds.sequences)
    assert all(a != b for s in ds.sequences for a, b in zip(s, s[1:], strict=False))


def test_short_mean_length_gives_minimum_length() -> None:
    ds = generate(n_items=100, n_users=50, mean_length=2.0)
    assert {len(s) for s in ds.sequences} == {3}
    assert generate(n_items=10, n_users=0).sequences == []
    with pytest.raises(ValueError):
        generate(n_items=1)


def test_popularity_is_skewed(data: Dataset) -> None:
    counts = sorted(Counter(i for s in data.sequences for i in s).values(), reverse=True)
    top_share = sum(counts[: 2000 // 100]) / sum(counts)
    assert top_share > 0.10  # the top 1% of items get more than 10x their uniform share


def test_last_item_is_predictable_from_the_previous_one(data: Dataset) -> None:
    """A last-item transition-count baseline beats popularity on the held-out last item by a clear margin."""
    popularity: Counter[str] = Counter()
    transitions: dict[str, Counter[str]] = {}
    for seq in data.sequences:
        train = seq[:-1]
        popularity.update(train)
        for a, b in zip(train, train[1:], strict=False):
            transitions.setdefault(a, Counter())[b] += 1
    top = [item for item, _ in popularity.most_common(10)]
    pop_hits = trans_hits = 0
    for seq in data.sequences:
        pop_hits += seq[-1] in top
        ranked = [item for item, _ in transitions.get(seq[-2], Counter()).most_common(10)]
        ranked += [item for item in top if item not in ranked][: 10 - len(ranked)]
        trans_hits += seq[-1] in ranked
    pop_hr, trans_hr = pop_hits / len(data.sequences), trans_hits / len(data.sequences)
    assert trans_hr > 2 * pop_hr
    assert trans_hr > pop_hr + 0.15


def test_write_read_round_trip(tmp_path: Path, data: Dataset) -> None:
    path = tmp_path / "synth.txt"
    write_user_lines(data, path)
    back = read_user_lines(path)
    assert back.users == data.users
    assert back.sequences == data.sequences
    assert read_sessions(path).sequences == data.sequences  # auto-detected as user lines
    assert back.name == "synth"


def test_write_refuses_what_cannot_round_trip(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="whitespace"):
        write_user_lines(Dataset("x", ["u1"], [["a b"]]), tmp_path / "x.txt")
    with pytest.raises(ValueError, match="no items"):
        write_user_lines(Dataset("x", ["u1"], [[]]), tmp_path / "x.txt")
    with pytest.raises(ValueError, match="duplicate"):
        write_user_lines(Dataset("x", ["u1", "u1"], [["a"], ["b"]]), tmp_path / "x.txt")


def test_progress_bar_goes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    generate(n_items=100, n_users=100, progress=True)
    out, err = capsys.readouterr()
    assert out == ""
    assert "synth" in err
    generate(n_items=100, n_users=100)
    assert capsys.readouterr() == ("", "")


def test_item_attributes_are_seeded_and_leave_the_sessions_alone() -> None:
    from recmesh.data.synth import item_attributes

    a, b, c = (generate(n_items=300, n_users=200, seed=s) for s in (1, 1, 2))
    # the sessions of a seed are what they were before items had attributes (published numbers depend on them)
    assert a.sequences[0] == ["i49", "i6", "i267", "i285"]
    assert a.sequences[2][:6] == ["i264", "i245", "i103", "i245", "i85", "i264"]
    assert item_attributes(a) == item_attributes(b)
    assert item_attributes(a) != item_attributes(c)
    assert [item for item, _ in item_attributes(a)] == [f"i{k}" for k in range(300)]  # unvisited items too
    with pytest.raises(ValueError, match="generate"):
        item_attributes(Dataset("file", ["u1"], [["a", "b", "c"]]))


def test_item_attributes_are_within_their_ranges(data: Dataset) -> None:
    from datetime import date

    from recmesh.catalog.table import Catalog
    from recmesh.data.synth import CATEGORIES, item_attributes

    docs = item_attributes(data)
    catalog = Catalog.of(docs)  # every value is one the catalogue holds
    assert catalog.schema == {
        "category": "string",
        "brand": "string",
        "price": "number",
        "available": "boolean",
        "created_at": "string",
    }
    attrs = [a for _, a in docs]
    assert {a["category"] for a in attrs} == set(CATEGORIES)
    assert 150 <= len({a["brand"] for a in attrs}) <= 200
    prices = np.array([a["price"] for a in attrs])
    assert prices.min() >= 1 and prices.max() <= 500 and np.all(np.round(prices, 2) == prices)
    assert 5 < np.median(prices) < 100  # log-normal: a long tail above a modest middle
    assert 0.92 < np.mean([a["available"] for a in attrs]) < 0.98
    days = [date.fromisoformat(str(a["created_at"])) for a in attrs]
    assert all(d.year == 2026 for d in days) and len({d.month for d in days}) >= 10


def test_item_attributes_follow_the_latent_structure(data: Dataset) -> None:
    """Each brand sits in one category, and sessions mostly stay in one category: a filter on it matters."""
    from recmesh.data.synth import item_attributes

    attrs = dict(item_attributes(data))
    categories_of_brand: dict[str, set[str]] = {}
    for a in attrs.values():
        categories_of_brand.setdefault(str(a["brand"]), set()).add(str(a["category"]))
    assert all(len(c) == 1 for c in categories_of_brand.values())
    steps = [
        (attrs[x]["category"], attrs[y]["category"]) for s in data.sequences for x, y in zip(s, s[1:], strict=False)
    ]
    same = np.mean([x == y for x, y in steps])
    assert same > 0.8  # 20 categories: 0.05 by chance
    by_category: dict[str, list[float]] = {}
    for a in attrs.values():
        by_category.setdefault(str(a["category"]), []).append(float(a["price"]))
    medians = sorted(np.median(p) for p in by_category.values())
    assert medians[-1] > 3 * medians[0]  # categories have their own price levels
