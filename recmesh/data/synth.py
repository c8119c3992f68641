"""Seeded synthetic sessions: the default data set, so every command runs without a download.

The generator is a small Markov model with the structure real logs have and models can learn:
- Zipf-like item popularity (exponent 1.1 over a random ranking of the items);
- latent topics: every item belongs to one topic, topics have their own (Zipf 0.8) popularity, and
  topic t is related to t-1 and t+1 (sessions sometimes drift there);
- a fixed sparse transition graph: every item has 3-5 "successor" items in its own topic, so the
  next item is predictable from the current one far beyond popularity;
- geometric session lengths with the requested mean and a minimum of 3 (leave-one-out needs a
  train, a validation and a test item), and never the same item twice in a row.

It is vectorised per step over all sessions at once, so millions of interactions take seconds.

Every item also has attributes, drawn from a random stream of their own (so the sessions of a seed are the same
with or without them) and tied to the latent structure so that filtering on them matters: `category` (20 readable
names, each a run of neighbouring topics, so a session mostly stays in one), `brand` (10 per category, each in
one category; items of a topic lean to one brand), `price` (log-normal around the category's own level, 1..500,
two decimals), `available` (95 % true) and `created_at` ("2026-MM-DD").

    dataset = generate(n_items=2000, n_users=3000, seed=1)
    item_attributes(dataset)   # [("i0", {"category": "garden", "brand": "Kelbex", "price": 23.4, ...}), ...]
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from recmesh.data.readers import gc_paused
from recmesh.data.sessions import Dataset

MIN_LENGTH = 3
ITEM_EXPONENT = 1.1
TOPIC_EXPONENT = 0.8
P_SUCCESSOR = 0.4  # next item is one of the current item's successors
P_DRIFT = 0.1  # next item comes from the neighbouring topic t-1 or t+1
# otherwise (0.5) the next item is a popularity-weighted draw from the current topic
MIN_SUCCESSORS, MAX_SUCCESSORS = 3, 5
REPEAT_RETRIES = 3

# item attributes
ATTRIBUTE_STREAM = 1  # the attributes' random stream is (seed, 1): the sessions' own draws stay untouched
CATEGORIES = (
    "books", "music", "movies", "games", "toys", "baby", "beauty", "health", "grocery", "pets",
    "garden", "tools", "kitchen", "home", "office", "computers", "phones", "audio", "sports", "fashion",
)  # fmt: skip
# brand names: the category's prefix and one of ten endings, so a brand belongs to one category by its name too
BRAND_PREFIXES = (
    "Al", "Bel", "Cor", "Dun", "El", "Fen", "Gar", "Hol", "Ix", "Jor",
    "Kel", "Lum", "Mor", "Nor", "Or", "Pel", "Quin", "Ros", "Sol", "Tor",
)  # fmt: skip
BRAND_ENDINGS = ("ant", "ber", "cor", "dex", "ex", "fin", "gen", "ix", "on", "us")
P_TOPIC_BRAND = 0.6  # an item takes its topic's brand, else any brand of its category (popular ones more often)
PRICE_LEVELS = (5.0, 120.0)  # a category's median price is log-uniform between these
PRICE_SPREAD = 0.7  # sigma of log(price) around the category's level
PRICE_RANGE = (1.0, 500.0)
P_AVAILABLE = 0.95
FIRST_DAY, DAYS = np.datetime64("2026-01-01"), 334  # created_at: Jan 1 .. Nov 30, 2026


@dataclass
class SynthDataset(Dataset):
    """A generated data set, which also knows what its items' attributes are drawn from."""

    topic_of: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False, compare=False)
    n_topics: int = field(default=1, compare=False)
    seed: int = field(default=0, compare=False)


@dataclass(frozen=True)
class _Catalogue:
    """Items laid out topic by topic, with what is needed to sample them vectorised."""

    topic_of: np.ndarray  # item -> topic
    order: np.ndarray  # position -> item, items of one topic contiguous
    position: np.ndarray  # item -> position in `order`
    start: np.ndarray  # topic -> first position
    size: np.ndarray  # topic -> number of items
    cdf: np.ndarray  # position -> topic + within-topic cumulative popularity, in (topic, topic + 1]
    topic_cdf: np.ndarray  # cumulative topic popularity, last value 1
    successors: np.ndarray  # item -> MAX_SUCCESSORS successor items (first n_successors valid)
    n_successors: np.ndarray  # item -> number of successors

    def sample_in_topics(self, topics: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One popularity-weighted item per entry of `topics`, all drawn by a single searchsorted."""
        pos = np.searchsorted(self.cdf, topics + rng.random(len(topics)), side="right")
        # floating point can push topic + u onto the next topic's range: clamp into the topic
        pos = np.clip(pos, self.start[topics], self.start[topics] + self.size[topics] - 1)
        return self.order[pos]

    def next_in_topic(self, items: np.ndarray) -> np.ndarray:
        """The item after `items` in its topic (cyclic): a deterministic different item of the same topic."""
        topics = self.topic_of[items]
        pos = self.start[topics] + (self.position[items] - self.start[topics] + 1) % self.size[topics]
        return self.order[pos]


def _zipf_weights(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Zipf weights 1/rank^exponent assigned to a random permutation of n things."""
    weights = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent
    return weights[rng.permutation(n)]


def _build_catalogue(n_items: int, n_topics: int, rng: np.random.Generator) -> _Catalogue:
    """Assign items to equal-sized topics, popularity and successor lists."""
    popularity = _zipf_weights(n_items, ITEM_EXPONENT, rng)
    order = rng.permutation(n_items).astype(np.int64)
    size = np.full(n_topics, n_items // n_topics, dtype=np.int64)
    size[: n_items % n_topics] += 1
    start = np.concatenate(([0], np.cumsum(size)[:-1])).astype(np.int64)
    topic_of = np.empty(n_items, dtype=np.int64)
    topic_of[order] = np.repeat(np.arange(n_topics, dtype=np.int64), size)
    position = np.empty(n_items, dtype=np.int64)
    position[order] = np.arange(n_items, dtype=np.int64)

    # within-topic cumulative popularity, offset by the topic number: topic t spans (t, t + 1]
    weights = popularity[order]
    cum = np.cumsum(weights)
    end = start + size - 1
    before = cum[start] - weights[start]  # cumulative weight before each topic
    totals = cum[end] - before
    pos_topic = topic_of[order]
    cdf = pos_topic + (cum - before[pos_topic]) / totals[pos_topic]
    cdf[end] = np.arange(n_topics) + 1.0  # exact segment ends, whatever the rounding

    topic_pop = _zipf_weights(n_topics, TOPIC_EXPONENT, rng)
    topic_cdf = np.cumsum(topic_pop) / topic_pop.sum()
    topic_cdf[-1] = 1.0

    # successors: uniform within the topic (so tail items get traffic too), never the item itself
    n_successors = rng.integers(MIN_SUCCESSORS, MAX_SUCCESSORS + 1, size=n_items)
    item_topic = topic_of[:, None]
    offsets = (rng.random((n_items, MAX_SUCCESSORS)) * size[item_topic]).astype(np.int64)
    successors = order[start[item_topic] + offsets]
    self_loop = successors == np.arange(n_items)[:, None]
    cat = _Catalogue(topic_of, order, position, start, size, cdf, topic_cdf, successors, n_successors)
    if self_loop.any():
        rows = np.nonzero(self_loop)[0]
        successors[self_loop] = cat.next_in_topic(rows)
    return cat


def _lengths(n_users: int, mean_length: float, rng: np.random.Generator) -> np.ndarray:
    """Session lengths: MIN_LENGTH plus a geometric tail, so the mean is `mean_length`."""
    extra_mean = mean_length - MIN_LENGTH + 1  # rng.geometric has support 1, 2, ...
    if extra_mean <= 1.0:
        return np.full(n_users, MIN_LENGTH, dtype=np.int64)
    return MIN_LENGTH - 1 + rng.geometric(1.0 / extra_mean, size=n_users).astype(np.int64)


def _step(current: np.ndarray, cat: _Catalogue, n_topics: int, rng: np.random.Generator) -> np.ndarray:
    """Next item for every session whose current item is `current`."""
    n = len(current)
    topics = cat.topic_of[current]
    choice = rng.random(n)
    drift = choice < P_DRIFT
    successor = choice >= 1.0 - P_SUCCESSOR
    if n_topics > 1 and drift.any():
        direction = np.where(rng.random(int(drift.sum())) < 0.5, -1, 1)
        topics[drift] = (topics[drift] + direction) % n_topics
    nxt = cat.sample_in_topics(topics, rng)
    if successor.any():
        src = current[successor]
        k = (rng.random(len(src)) * cat.n_successors[src]).astype(np.int64)
        nxt[successor] = cat.successors[src, k]
    for _ in range(REPEAT_RETRIES):
        repeat = np.nonzero(nxt == current)[0]
        if not len(repeat):
            return nxt
        nxt[repeat] = cat.sample_in_topics(cat.topic_of[current[repeat]], rng)
    repeat = nxt == current
    nxt[repeat] = cat.next_in_topic(current[repeat])
    return nxt


def generate(
    n_items: int = 5000,
    n_users: int = 20000,
    mean_length: float = 8.0,
    n_topics: int = 50,
    seed: int = 0,
    progress: bool = False,
) -> Dataset:
    """A seeded synthetic data set, users "u0".. with sessions over items "i0".."i{n_items-1}".

    `n_topics` is capped at n_items // 4 so every topic has a few items to move between.
    """
    if n_items < 2:
        raise ValueError("n_items must be at least 2 (no immediate repeats needs two items)")
    if n_users < 0:
        raise ValueError("n_users must not be negative")
    n_topics = max(1, min(n_topics, n_items // 4))
    rng = np.random.default_rng(seed)
    cat = _build_catalogue(n_items, n_topics, rng)
    lengths = _lengths(n_users, mean_length, rng)

    # process sessions longest first, so the ones still running at step s are a prefix
    by_length = np.argsort(-lengths, kind="stable")
    offsets = np.cumsum(lengths) - lengths
    sorted_offsets = offsets[by_length]
    sorted_lengths = lengths[by_length]
    flat = np.empty(int(lengths.sum()), dtype=np.int64)
    max_len = int(lengths.max()) if n_users else 0
    # running[s] = number of sessions with length > s
    running = np.searchsorted(-sorted_lengths, -np.arange(max_len), side="left")

    with tqdm(total=len(flat), desc="synth", unit="item", file=sys.stderr, disable=not progress) as bar:
        current = np.empty(0, dtype=np.int64)
        for s in range(max_len):
            n = int(running[s])
            if s == 0:
                start_topics = np.searchsorted(cat.topic_cdf, rng.random(n), side="right")
                current = cat.sample_in_topics(np.minimum(start_topics, n_topics - 1), rng)
            else:
                current = _step(current[:n], cat, n_topics, rng)
            flat[sorted_offsets[:n] + s] = current
            bar.update(n)

    with gc_paused():
        names = np.array([f"i{k}" for k in range(n_items)], dtype=object)
        items = names[flat].tolist()
        ends = (offsets + lengths).tolist()
        sequences = [items[a:b] for a, b in zip(offsets.tolist(), ends, strict=True)]
        users = [f"u{k}" for k in range(n_users)]
    return SynthDataset("synth", users, sequences, Counter(), topic_of=cat.topic_of, n_topics=n_topics, seed=seed)


def item_attributes(dataset: Dataset) -> list[tuple[str, dict[str, str | float | bool]]]:
    """Every item's attributes ("i0".. in order, including items no session visits), the same for the same seed.
    ValueError for a data set `generate` did not make (a file read back has lost the topics)."""
    if not isinstance(dataset, SynthDataset):
        raise ValueError(f"{dataset.name}: item attributes exist only for data sets made by generate()")
    topic_of, n_topics = dataset.topic_of, dataset.n_topics
    n_items = topic_of.size
    rng = np.random.default_rng([dataset.seed, ATTRIBUTE_STREAM])
    n_categories = min(len(CATEGORIES), n_topics)
    # contiguous runs of topics: a session drifting to topic t +- 1 mostly stays in its category
    category_of_topic = np.arange(n_topics) * n_categories // n_topics
    category = category_of_topic[topic_of]

    n_brands = len(BRAND_ENDINGS)
    topic_brand = rng.integers(0, n_brands, size=n_topics)
    brand_weights = 1.0 / np.arange(1, n_brands + 1)
    any_brand = rng.choice(n_brands, size=n_items, p=brand_weights / brand_weights.sum())
    brand = np.where(rng.random(n_items) < P_TOPIC_BRAND, topic_brand[topic_of], any_brand)

    low, high = np.log(PRICE_LEVELS)
    level = rng.uniform(low, high, size=n_categories)
    price = np.exp(level[category] + PRICE_SPREAD * rng.standard_normal(n_items))
    price = np.round(np.clip(price, *PRICE_RANGE), 2)
    available = rng.random(n_items) < P_AVAILABLE
    created = (FIRST_DAY + rng.integers(0, DAYS, size=n_items)).astype(str)

    categories = [CATEGORIES[c] for c in category.tolist()]
    brands = [BRAND_PREFIXES[c] + BRAND_ENDINGS[b] for c, b in zip(category.tolist(), brand.tolist(), strict=True)]
    rows = zip(categories, brands, price.tolist(), available.tolist(), created.tolist(), strict=True)
    return [
        (f"i{k}", {"category": c, "brand": b, "price": p, "available": a, "created_at": d})
        for k, (c, b, p, a, d) in enumerate(rows)
    ]


def write_user_lines(dataset: Dataset, path: str | Path) -> None:
    """Write `user item1 item2 ...` lines that `read_user_lines` reads back identically.

    Refuses what could not round-trip: duplicate users, empty sequences, ids containing whitespace.
    """
    if len(set(dataset.users)) != len(dataset.users):
        dupes = [u for u, n in Counter(dataset.users).items() if n > 1][:5]
        raise ValueError(f"duplicate user ids cannot be written as user lines: {dupes}")
    with Path(path).open("w", encoding="utf-8") as f:
        chunk: list[str] = []
        for user, seq in zip(dataset.users, dataset.sequences, strict=True):
            if not seq:
                raise ValueError(f"user {user!r} has no items; user lines need at least one")
            line = f"{user} {' '.join(seq)}"
            if len(line.split()) != len(seq) + 1:
                raise ValueError(f"user {user!r}: an id is empty or contains whitespace")
            chunk.append(line)
            if len(chunk) >= 10_000:
                f.write("\n".join(chunk) + "\n")
                chunk.clear()
        if chunk:
            f.write("\n".join(chunk) + "\n")
