"""Items and their attributes on disk: JSON Lines or CSV in, JSON Lines out, and the bundle's catalogue snapshot.

JSON Lines (``.jsonl``, ``.ndjson``, ``.json``): one object per line, ``{"item_id": "i1", "category": "shoes",
"price": 30, "available": true}``; blank lines are skipped and ``null`` leaves an attribute absent. CSV (``.csv``):
a header with an ``item_id`` column, the other columns attributes, each typed from all its non-empty cells (all
numbers: number; all true/false, any case: boolean; else string); an empty cell leaves the attribute absent.

Every problem is one CatalogFileError whose message starts with ``<file>:<line>:``, so a user can go straight to it.

Usage::

    docs = read_items("items.csv")                  # [("i1", {"category": "shoes", "price": 30}), ...]
    write_items("items.jsonl", docs)                # one JSON object per line, item_id first
    catalog = read_catalog("items.jsonl")           # a Catalog (recmesh.catalog.table)
    catalog = load_catalog(Path("models/v1"))       # the bundle's snapshot, None for a bundle without one
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from recmesh.catalog.table import AttrType, Catalog, CatalogError, Value, check_name

ID_FIELD = "item_id"
CATALOG_FILE = "catalog.jsonl"  # the snapshot inside a bundle
JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
CSV_SUFFIXES = (".csv",)
# what a CSV cell must look like to count as a number: no "nan", "inf", "0x10" or thousands separators
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
BOOLEANS = {"true": True, "false": False}
# characters str.splitlines breaks on that json.dumps leaves raw: escaped, so any line reader sees one item per line
LINE_BREAKS_ESCAPED = str.maketrans({c: f"\\u{ord(c):04x}" for c in "\x85\u2028\u2029"})

Docs = list[tuple[str, dict[str, Value]]]


class CatalogFileError(ValueError):
    """An items file that cannot be read; the message starts with ``<file>:<line>:`` (the line is left out when
    the problem is the file as a whole, e.g. it does not exist)."""


def read_items(path: str | Path) -> Docs:
    """The items of a JSON Lines or CSV file, in file order, each with its attributes as Catalog.get gives them
    (absent ones left out). CatalogFileError for any problem, naming file and line."""
    catalog = read_catalog(path)
    return [(item_id, catalog.attributes(row)) for row, item_id in enumerate(catalog.ids)]


def read_catalog(path: str | Path) -> Catalog:
    """The items of a JSON Lines or CSV file as a Catalog (rows in file order)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in JSON_SUFFIXES + CSV_SUFFIXES:
        known = ", ".join(JSON_SUFFIXES + CSV_SUFFIXES)
        raise CatalogFileError(f"{path}: unknown items file type {path.suffix!r} (use one of {known})")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CatalogFileError(f"{path}: no such file or directory") from None
    except IsADirectoryError:
        raise CatalogFileError(f"{path}: is a directory, expected an items file") from None
    except OSError as e:
        raise CatalogFileError(f"{path}: cannot read: {e.strerror or e}") from None
    text = _decode(path, raw)
    rows = _json_rows(path, text) if suffix in JSON_SUFFIXES else _csv_rows(path, text)
    return _checked(path, rows)


def write_items(path: str | Path, docs: Iterable[tuple[str, Mapping[str, object]]]) -> int:
    """Write items as JSON Lines (item_id first, then the attributes sorted by name; absent/None ones left out) and
    return how many. ValueError for what read_items could not read back (an attribute named item_id, NaN)."""
    count = 0
    with Path(path).open("w", encoding="utf-8") as f:
        for item_id, attrs in docs:
            if ID_FIELD in attrs:
                raise ValueError(f"item {item_id!r}: an attribute cannot be named {ID_FIELD!r}")
            doc = {ID_FIELD: item_id, **{k: attrs[k] for k in sorted(attrs) if attrs[k] is not None}}
            f.write(json.dumps(doc, ensure_ascii=False, allow_nan=False).translate(LINE_BREAKS_ESCAPED) + "\n")
            count += 1
    return count


def load_catalog(bundle_dir: str | Path) -> Catalog | None:
    """The catalogue snapshot a bundle carries (``catalog.jsonl``), or None for a bundle written without one. It
    reads the file as is: verify the bundle first (recmesh.bundle.load_manifest) as load_model does."""
    path = Path(bundle_dir) / CATALOG_FILE
    if not path.is_file():
        return None
    return read_catalog(path)


def catalog_summary(catalog: Catalog) -> dict[str, object]:
    """What a bundle's manifest records of its catalogue: ``{"items": N, "attributes": {name: type}}``."""
    return {"items": len(catalog), "attributes": dict(sorted(catalog.schema.items()))}


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")  # a spreadsheet's byte-order mark is not part of the first column's name
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        hint = "; a compressed file? decompress it first" if raw[:2] == b"\x1f\x8b" else ""
        raise CatalogFileError(f"{path}:{line}: not UTF-8 text ({e.reason}){hint}") from None


def _json_rows(path: Path, text: str) -> Iterator[tuple[int, object, dict[str, object]]]:
    """(line, item id as written, attributes) per non-blank line."""
    # split on newlines only: a JSON string may hold U+2028 and friends, which str.splitlines would break on
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as e:
            raise CatalogFileError(
                f"{path}:{number}: not valid JSON (one object per line expected): {e.msg} (column {e.colno})"
            ) from None
        if isinstance(doc, list):
            raise CatalogFileError(f"{path}:{number}: a JSON array; expected one object per line (JSON Lines)")
        if not isinstance(doc, dict):
            raise CatalogFileError(f"{path}:{number}: expected a JSON object with {ID_FIELD!r}, got {doc!r:.60}")
        if ID_FIELD not in doc:
            raise CatalogFileError(f"{path}:{number}: no {ID_FIELD!r} field")
        item_id = doc.pop(ID_FIELD)
        yield number, item_id, doc


def _csv_rows(path: Path, text: str) -> Iterator[tuple[int, object, dict[str, object]]]:
    """(line, item id, attributes) per CSV row, each column typed from all its non-empty cells."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise CatalogFileError(f"{path}:1: empty file; expected a header with an {ID_FIELD!r} column")
        header = [name.strip() for name in header]
        seen: set[str] = set()
        for name in header:
            if name in seen:
                raise CatalogFileError(f"{path}:1: column {name!r} appears twice in the header")
            seen.add(name)
        if ID_FIELD not in header:
            raise CatalogFileError(f"{path}:1: no {ID_FIELD!r} column (the header has: {', '.join(header)})")
        rows: list[tuple[int, list[str]]] = []
        start = reader.line_num + 1  # a quoted cell can span lines: a row's number is the line it starts on
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                start = reader.line_num + 1
                continue
            if len(cells) != len(header):
                raise CatalogFileError(f"{path}:{start}: {len(cells)} fields, the header has {len(header)}")
            rows.append((start, [cell.strip() for cell in cells]))
            start = reader.line_num + 1
    except csv.Error as e:
        raise CatalogFileError(f"{path}:{reader.line_num}: malformed CSV: {e}") from None
    id_column = header.index(ID_FIELD)
    for i, name in enumerate(header):
        if i != id_column and any(cells[i] for _, cells in rows):  # a column with no value may be unnamed
            try:
                check_name(name)
            except CatalogError as e:
                raise CatalogFileError(f"{path}:1: {e}") from None
    types = {i: _column_type([cells[i] for _, cells in rows]) for i in range(len(header)) if i != id_column}
    for line, cells in rows:
        attrs: dict[str, object] = {header[i]: _cell_value(cells[i], kind) for i, kind in types.items() if cells[i]}
        yield line, cells[id_column], attrs


def _column_type(cells: list[str]) -> AttrType:
    filled = [cell for cell in cells if cell]
    if filled and all(NUMBER.fullmatch(cell) for cell in filled):
        return "number"
    if filled and all(cell.lower() in BOOLEANS for cell in filled):
        return "boolean"
    return "string"


def _cell_value(cell: str, kind: AttrType) -> Value:
    if kind == "number":
        return float(cell)
    if kind == "boolean":
        return BOOLEANS[cell.lower()]
    return cell


def _checked(path: Path, rows: Iterable[tuple[int, object, dict[str, object]]]) -> Catalog:
    """The rows in a catalogue, each checked against those before it (so one attribute keeps one type over the
    file) and each id once."""
    catalog = Catalog()
    first_line: dict[str, int] = {}
    for line, raw_id, attrs in rows:
        item_id = str(raw_id) if isinstance(raw_id, int) and not isinstance(raw_id, bool) else raw_id
        if not isinstance(item_id, str) or not item_id.strip():
            raise CatalogFileError(f"{path}:{line}: {ID_FIELD} must be a non-empty string, got {raw_id!r}")
        if item_id in first_line:
            first = first_line[item_id]
            raise CatalogFileError(f"{path}:{line}: duplicate item id {item_id!r} (first on line {first})")
        try:
            catalog.upsert(item_id, attrs)
        except CatalogError as e:
            raise CatalogFileError(f"{path}:{line}: {e}") from None
        first_line[item_id] = line
    return catalog
