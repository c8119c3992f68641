"""Readers for the interaction formats in shared/data (see its README), all returning a `Dataset`.

Malformed input raises `DataFormatError` naming file and line, because a silently skipped line would
change evaluation results without anyone noticing; tolerated oddities (blank lines, short sequences,
rows without a group id) are counted in `Dataset.filtered` instead.
"""

from __future__ import annotations

import csv
import gc
import math
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from operator import itemgetter
from pathlib import Path

from recmesh.data.sessions import Dataset

SESSION_ALIASES = ("session_id", "sessionId", "session")
USER_ALIASES = ("user_id", "userId", "user")
ITEM_ALIASES = ("item_id", "itemId", "item")
TIME_ALIASES = ("timeframe", "timestamp", "time", "ts", "eventdate")
CSV_DELIMITERS = (",", ";", "\t")
CSV_SUFFIXES = (".csv", ".tsv")
# Values that mean "no id" in exported logs (diginetica writes "NA" for anonymous users).
MISSING_IDS = frozenset({"", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"})
SNIFF_LINES = 50


class DataFormatError(ValueError):
    """Malformed input; the message reads `file:line: what is wrong` like a compiler error."""

    def __init__(self, path: str | Path, line: int, message: str) -> None:
        self.path = Path(path)
        self.line = line
        self.reason = message
        super().__init__(f"{self.path.name}:{line}: {message}")


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building millions of small lists.

    Every allocation batch would otherwise trigger a collection that walks all lists built so far,
    which makes reading 10M interactions 2-3x slower. Nothing built here has reference cycles.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _split_lines(lines: Iterable[str], filtered: Counter[str]) -> Iterator[tuple[int, list[str]]]:
    """(line number, whitespace-separated fields) of each line; blank lines are counted as filtered, not yielded."""
    for lineno, line in enumerate(lines, 1):
        fields = line.split()
        if fields:
            yield lineno, fields
        else:
            filtered["blank line"] += 1


def _finish(
    path: Path, users: list[str], sequences: list[list[str]], filtered: Counter[str], min_length: int
) -> Dataset:
    """Apply the common `min_length` filter (counted, never silent) and name the data set after the file."""
    if min_length > 1:
        kept = [(u, s) for u, s in zip(users, sequences, strict=True) if len(s) >= min_length]
        dropped = len(users) - len(kept)
        if dropped:
            filtered[f"sequence shorter than {min_length}"] += dropped
            users = [u for u, _ in kept]
            sequences = [s for _, s in kept]
    return Dataset(name=path.stem, users=users, sequences=sequences, filtered=filtered)


def read_user_lines(path: str | Path, min_length: int = 1) -> Dataset:
    """Read `user item1 item2 ...` lines (items in time order), the format of beauty.txt/toys.txt."""
    path = Path(path)
    users: list[str] = []
    sequences: list[list[str]] = []
    seen: dict[str, int] = {}
    filtered: Counter[str] = Counter()
    intern = sys.intern  # item ids repeat a lot: share one string object per id
    with gc_paused(), path.open(encoding="utf-8") as f:
        for lineno, fields in _split_lines(f, filtered):
            if len(fields) < 2:
                raise DataFormatError(
                    path, lineno, f"expected 'user item1 item2 ...', got {_plural(len(fields), 'field')}"
                )
            user = fields[0]
            first = seen.setdefault(user, lineno)
            if first != lineno:
                raise DataFormatError(path, lineno, f"user {user!r} already appeared on line {first}")
            users.append(user)
            sequences.append(list(map(intern, fields[1:])))
    return _finish(path, users, sequences, filtered, min_length)


def read_pairs(path: str | Path, min_length: int = 1) -> Dataset:
    """Read `user item` lines, in time order per user; users keep their first-appearance order."""
    path = Path(path)
    groups: dict[str, list[str]] = {}
    filtered: Counter[str] = Counter()
    intern = sys.intern
    with gc_paused(), path.open(encoding="utf-8") as f:
        for lineno, fields in _split_lines(f, filtered):
            if len(fields) != 2:
                raise DataFormatError(path, lineno, f"expected 'user item', got {_plural(len(fields), 'field')}")
            user, item = fields
            seq = groups.get(user)
            if seq is None:
                groups[user] = seq = []
            seq.append(intern(item))
    return _finish(path, list(groups), list(groups.values()), filtered, min_length)


def _sniff_delimiter(path: Path, header_line: str) -> str:
    """Pick the candidate delimiter occurring most often in the header (ties: `,` before `;` before tab)."""
    counts = [(header_line.count(d), d) for d in CSV_DELIMITERS]
    best = max(counts, key=itemgetter(0))
    if best[0] == 0:
        raise DataFormatError(
            path,
            1,
            f"cannot tell the delimiter: the header has none of ',', ';', tab: {header_line.strip()!r}",
        )
    return best[1]


def _column(
    path: Path, header: list[str], explicit: str | None, aliases: Iterable[str], role: str, required: bool
) -> int | None:
    """Index of a column given by name, or found among common aliases (exact, then case-insensitive)."""
    if explicit is not None:
        if explicit not in header:
            raise DataFormatError(path, 1, f"no {role} column {explicit!r}; header columns: {header}")
        return header.index(explicit)
    aliases = tuple(aliases)
    for alias in aliases:
        if alias in header:
            return header.index(alias)
    lowered = [h.lower() for h in header]
    for alias in aliases:
        if alias.lower() in lowered:
            return lowered.index(alias.lower())
    if required:
        raise DataFormatError(
            path,
            1,
            f"no {role} column (looked for {', '.join(aliases)}); header columns: {header}; "
            f"pass {role}_col= to name it",
        )
    return None


def _iso_seconds(text: str) -> float:
    """ISO date/datetime as seconds; naive values are taken as UTC so they compare with aware ones."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


class _TimeParser:
    """Parse one time column: numeric if its first value is a number, else ISO dates; never mixed."""

    def __init__(self, path: Path, column: str) -> None:
        self.path = path
        self.column = column
        self.parse: Callable[[str], float] | None = None
        self.kind = ""
        self.cache: dict[str, float] = {}

    def __call__(self, text: str, lineno: int) -> float:
        if self.parse is None:
            try:
                float(text)
                self.parse, self.kind = float, "a number"
            except ValueError:
                self.parse, self.kind = _iso_seconds, "an ISO date/datetime"
        value = self.cache.get(text)
        if value is not None:
            return value
        try:
            value = self.parse(text)
        except ValueError:
            raise DataFormatError(
                self.path, lineno, f"time {text!r} in column {self.column!r} is not {self.kind}"
            ) from None
        if not math.isfinite(value):
            raise DataFormatError(self.path, lineno, f"time {text!r} in column {self.column!r} is not finite")
        if len(self.cache) < 100_000:
            self.cache[text] = value
        return value


def read_csv(
    path: str | Path,
    delimiter: str | None = None,
    session_col: str | None = None,
    item_col: str | None = None,
    time_col: str | None = None,
    user_col: str | None = None,
    group_by: str = "session",
    min_length: int = 1,
) -> Dataset:
    """Read a headed CSV/TSV click log, grouping rows into sequences by session or user, ordered by time.

    Without a time column the file order is the time order. Ties keep file order (stable sort).
    """
    if group_by not in ("session", "user"):
        raise ValueError(f"group_by must be 'session' or 'user', got {group_by!r}")
    path = Path(path)
    filtered: Counter[str] = Counter()
    groups: dict[str, list[tuple[float, str]]] = {}
    intern = sys.intern
    with gc_paused(), path.open(encoding="utf-8-sig", newline="") as f:
        header_line = f.readline()
        if not header_line.strip():
            raise DataFormatError(path, 1, "expected a header line, got an empty line")
        if delimiter is None:
            delimiter = _sniff_delimiter(path, header_line)
        header = [h.strip() for h in next(csv.reader([header_line], delimiter=delimiter))]
        session_i = _column(path, header, session_col, SESSION_ALIASES, "session", group_by == "session")
        user_i = _column(path, header, user_col, USER_ALIASES, "user", group_by == "user")
        item_i = _column(path, header, item_col, ITEM_ALIASES, "item", True)
        time_i = _column(path, header, time_col, TIME_ALIASES, "time", False)
        group_i = session_i if group_by == "session" else user_i
        assert group_i is not None and item_i is not None  # required columns raise above
        parse_time = _TimeParser(path, header[time_i]) if time_i is not None else None
        n_fields = len(header)
        reader = csv.reader(f, delimiter=delimiter)
        for row in reader:
            lineno = reader.line_num + 1  # the header was consumed before the reader started counting
            if not row or (len(row) == 1 and not row[0].strip()):
                filtered["blank line"] += 1
                continue
            if len(row) != n_fields:
                raise DataFormatError(
                    path,
                    lineno,
                    f"expected {n_fields} fields separated by {delimiter!r} as in the header, got {len(row)}",
                )
            item = row[item_i].strip()
            if item in MISSING_IDS:
                raise DataFormatError(path, lineno, f"missing item id in column {header[item_i]!r}")
            group = row[group_i].strip()
            if group in MISSING_IDS:
                filtered[f"row without {group_by} id"] += 1
                continue
            t = parse_time(row[time_i].strip(), lineno) if time_i is not None and parse_time else 0.0
            seq = groups.get(group)
            if seq is None:
                groups[group] = seq = []
            seq.append((t, intern(item)))
    sequences = []
    by_time = itemgetter(0)
    for seq in groups.values():
        seq.sort(key=by_time)
        sequences.append([item for _, item in seq])
    return _finish(path, list(groups), sequences, filtered, min_length)


def _sniff_text_format(path: Path) -> str:
    """`pairs` if the first non-blank lines all have exactly 2 fields, else `user_lines`."""
    seen = 0
    with path.open(encoding="utf-8") as f:
        for line in f:
            n = len(line.split())
            if n == 0:
                continue
            if n != 2:
                return "user_lines"
            seen += 1
            if seen >= SNIFF_LINES:
                break
    return "pairs" if seen else "user_lines"


def read_sessions(path: str | Path, fmt: str = "auto", min_length: int = 1, **csv_options: object) -> Dataset:
    """Read any supported format; `fmt` is "auto", "csv", "pairs" or "user_lines".

    "auto" takes .csv/.tsv as CSV, otherwise sniffs the first 50 non-blank lines (see `_sniff_text_format`).
    """
    path = Path(path)
    if fmt == "auto":
        fmt = "csv" if path.suffix.lower() in CSV_SUFFIXES else _sniff_text_format(path)
    if fmt != "csv" and csv_options:
        raise TypeError(f"options {sorted(csv_options)} only apply to csv, not {fmt}")
    if fmt == "csv":
        return read_csv(path, min_length=min_length, **csv_options)  # type: ignore[arg-type]
    if fmt == "pairs":
        return read_pairs(path, min_length=min_length)
    if fmt == "user_lines":
        return read_user_lines(path, min_length=min_length)
    raise ValueError(f"unknown format {fmt!r}; expected 'auto', 'csv', 'pairs' or 'user_lines'")
