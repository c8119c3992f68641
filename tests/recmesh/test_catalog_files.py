"""Items files: JSON Lines and CSV in, JSON Lines out; every problem named by file and line."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from recmesh.catalog.files import CatalogFileError, load_catalog, read_catalog, read_items, write_items

DOCS = [
    ("i1", {"category": "shoes", "price": 30.0, "available": True, "created_at": "2026-03-01"}),
    ("i2", {"category": "bags", "price": 12.5}),
    ("i3", {"available": False, "note": "déjà vu \u2028 line \x85 separator"}),
]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_write_then_read_is_the_same_items(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    assert write_items(path, DOCS) == 3
    assert read_items(path) == DOCS
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3  # one item per line, even with U+2028 inside a value
    assert list(json.loads(lines[0])) == ["item_id", "available", "category", "created_at", "price"]


def test_written_file_is_byte_for_byte_repeatable(tmp_path: Path) -> None:
    write_items(tmp_path / "a.jsonl", DOCS)
    write_items(tmp_path / "b.jsonl", [(i, dict(reversed(list(a.items())))) for i, a in DOCS])
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


def test_write_leaves_absent_attributes_out_and_refuses_what_cannot_be_read_back(tmp_path: Path) -> None:
    write_items(tmp_path / "x.jsonl", [("a", {"price": None, "brand": "acme"})])
    assert read_items(tmp_path / "x.jsonl") == [("a", {"brand": "acme"})]
    with pytest.raises(ValueError, match="item_id"):
        write_items(tmp_path / "y.jsonl", [("a", {"item_id": "b"})])
    with pytest.raises(ValueError):
        write_items(tmp_path / "z.jsonl", [("a", {"price": float("nan")})])


def test_json_lines_skip_blank_lines_and_read_null_as_absent(tmp_path: Path) -> None:
    path = write(
        tmp_path / "items.ndjson",
        '{"item_id": "a", "price": 3, "brand": null}\n\n   \n{"item_id": 7, "price": 4.5}\r\n',
    )
    assert read_items(path) == [("a", {"price": 3.0}), ("7", {"price": 4.5})]  # a numeric id is read as its text
    assert write(tmp_path / "empty.json", "\n").exists() and read_items(tmp_path / "empty.json") == []


def test_read_catalog_builds_typed_columns(tmp_path: Path) -> None:
    write_items(tmp_path / "items.jsonl", DOCS)
    catalog = read_catalog(tmp_path / "items.jsonl")
    assert len(catalog) == 3
    assert catalog.schema == {
        "category": "string",
        "price": "number",
        "available": "boolean",
        "created_at": "string",
        "note": "string",
    }
    assert catalog.get("i2") == {"category": "bags", "price": 12.5}


def test_csv_types_each_column_from_all_its_cells(tmp_path: Path) -> None:
    path = write(
        tmp_path / "items.csv",
        "\ufeffitem_id,price,available,category,code,mixed\n"
        "a,10,true,shoes,007,1\n"
        "b,2.5e1,FALSE,,12,yes\n"
        "\n"
        'c,,True,"bags, small",3,\n',
    )
    assert read_items(path) == [
        ("a", {"price": 10.0, "available": True, "category": "shoes", "code": 7.0, "mixed": "1"}),
        ("b", {"price": 25.0, "available": False, "code": 12.0, "mixed": "yes"}),
        ("c", {"available": True, "category": "bags, small", "code": 3.0}),
    ]


def test_csv_column_without_any_value_is_left_out_even_unnamed(tmp_path: Path) -> None:
    path = write(tmp_path / "items.csv", "item_id,brand,\na,acme,\nb,,\n")
    assert read_items(path) == [("a", {"brand": "acme"}), ("b", {})]


def test_csv_number_inference_refuses_nan_and_inf(tmp_path: Path) -> None:
    path = write(tmp_path / "items.csv", "item_id,size\na,nan\nb,inf\nc,1\n")
    assert [attrs["size"] for _, attrs in read_items(path)] == ["nan", "inf", "1"]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("a.jsonl", '{"item_id": "a"}\n{"item_id": "b",\n', "a.jsonl:2: not valid JSON"),
        ("a.jsonl", '{"item_id": "a"}\n\n{"price": 3}\n', "a.jsonl:3: no 'item_id' field"),
        ("a.jsonl", '{"item_id": ""}\n', "a.jsonl:1: item_id must be a non-empty string"),
        ("a.jsonl", '{"item_id": ["x"]}\n', "a.jsonl:1: item_id must be a non-empty string"),
        ("a.jsonl", "[1, 2]\n", "a.jsonl:1: a JSON array; expected one object per line"),
        ("a.jsonl", '"text"\n', "a.jsonl:1: expected a JSON object"),
        (
            "a.jsonl",
            '{"item_id": "a", "price": 3}\n{"item_id": "b", "price": "cheap"}\n',
            "a.jsonl:2: item 'b', attribute 'price': expected a number, got 'cheap'",
        ),
        ("a.jsonl", '{"item_id": "a", "tags": ["x"]}\n', "a.jsonl:1: item 'a', attribute 'tags'"),
        ("a.jsonl", '{"item_id": "a", "unit price": 3}\n', "a.jsonl:1: attribute name 'unit price'"),
        ("a.jsonl", '{"item_id": "a", "name": "' + "x" * 300 + '"}\n', "a.jsonl:1: item 'a', attribute 'name'"),
        ("a.csv", "id,price\na,1\n", "a.csv:1: no 'item_id' column (the header has: id, price)"),
        ("a.csv", "item_id,price,price\na,1,2\n", "a.csv:1: column 'price' appears twice"),
        ("a.csv", "item_id,unit price\na,1\n", "a.csv:1: attribute name 'unit price'"),
        ("a.csv", "item_id,price\na,1\n\nb,2,3\n", "a.csv:4: 3 fields, the header has 2"),
        ("a.csv", 'item_id,note\na,"two\nlines"\nb,"x"y\n', "a.csv:4: malformed CSV"),
        ("a.csv", "item_id,price\n,1\n", "a.csv:2: item_id must be a non-empty string"),
        ("a.csv", "", "a.csv:1: empty file"),
        ("a.txt", "item_id\n", "a.txt: unknown items file type '.txt'"),
    ],
)
def test_every_error_names_file_and_line(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = write(tmp_path / name, text)
    with pytest.raises(CatalogFileError) as caught:
        read_items(path)
    assert str(caught.value).startswith(f"{tmp_path / message.split(':', 1)[0]}:")
    assert message.split(":", 1)[1] in str(caught.value)


def test_csv_line_numbers_count_quoted_line_breaks(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", 'item_id,note\na,"two\nlines"\nb,x\na,y\n')
    with pytest.raises(CatalogFileError, match=r"a\.csv:5: duplicate item id 'a' \(first on line 2\)"):
        read_items(path)


def test_duplicate_item_id_names_the_first_line(tmp_path: Path) -> None:
    path = write(tmp_path / "a.jsonl", '{"item_id": "x"}\n{"item_id": "y"}\n\n{"item_id": "x", "price": 1}\n')
    with pytest.raises(CatalogFileError, match=r"a\.jsonl:4: duplicate item id 'x' \(first on line 1\)"):
        read_items(path)


def test_missing_directory_and_binary_files_are_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogFileError, match=r"nope\.jsonl: no such file or directory$"):
        read_items(tmp_path / "nope.jsonl")
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(CatalogFileError, match=r"dir\.csv: is a directory"):
        read_items(tmp_path / "dir.csv")
    with gzip.open(tmp_path / "packed.jsonl", "wt") as f:
        f.write('{"item_id": "a"}\n')
    with pytest.raises(CatalogFileError, match=r"packed\.jsonl:1: not UTF-8 text .*decompress it first"):
        read_items(tmp_path / "packed.jsonl")
    (tmp_path / "latin1.jsonl").write_bytes(b'{"item_id": "a"}\n{"item_id": "caf\xe9"}\n')
    with pytest.raises(CatalogFileError, match=r"latin1\.jsonl:2: not UTF-8 text"):
        read_items(tmp_path / "latin1.jsonl")


def test_load_catalog_is_none_for_a_bundle_without_one(tmp_path: Path) -> None:
    assert load_catalog(tmp_path) is None
    write_items(tmp_path / "catalog.jsonl", DOCS)
    catalog = load_catalog(tmp_path)
    assert catalog is not None and catalog.ids == ["i1", "i2", "i3"]
