"""Readers: every format round trip, the real files in shared/data, and errors that name file and line."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from recmesh.data.readers import (
    DataFormatError,
    read_csv,
    read_pairs,
    read_sessions,
    read_user_lines,
)

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def real_file(name: str) -> Path:
    path = DATA / name
    if not path.exists():
        pytest.skip(f"real data file {path} is absent (shared/data is not mounted next to the repo)")
    return path


# --- user lines -----------------------------------------------------------------------------------


def test_user_lines_round_trip_and_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "small.txt", "1 a b c\n\n2 c d\n   \n3 e\n")
    ds = read_user_lines(path)
    assert ds.name == "small"
    assert ds.users == ["1", "2", "3"]
    assert ds.sequences == [["a", "b", "c"], ["c", "d"], ["e"]]
    assert ds.filtered == {"blank line": 2}


def test_user_lines_min_length_is_counted(tmp_path: Path) -> None:
    path = write(tmp_path / "small.txt", "1 a b c\n2 c d\n3 e\n")
    ds = read_user_lines(path, min_length=3)
    assert ds.users == ["1"]
    assert ds.filtered == {"sequence shorter than 3": 2}


def test_user_lines_user_without_items(tmp_path: Path) -> None:
    path = write(tmp_path / "beauty.txt", "1 a b\n\n2\n")
    with pytest.raises(DataFormatError, match=r"^beauty\.txt:3: expected 'user item1 item2 \.\.\.', got 1 field$"):
        read_user_lines(path)


def test_user_lines_duplicate_user_names_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "dup.txt", "1 a b\n2 c\n1 d\n")
    with pytest.raises(DataFormatError) as err:
        read_user_lines(path)
    assert str(err.value) == "dup.txt:3: user '1' already appeared on line 1"
    assert err.value.line == 3
    assert isinstance(err.value, ValueError)


# --- pairs ----------------------------------------------------------------------------------------


def test_pairs_round_trip_keeps_first_appearance_order(tmp_path: Path) -> None:
    path = write(tmp_path / "pairs.txt", "u2 a\nu1 b\n\nu2 c\nu1 a\nu3 z\n")
    ds = read_pairs(path)
    assert ds.users == ["u2", "u1", "u3"]
    assert ds.sequences == [["a", "c"], ["b", "a"], ["z"]]
    assert ds.filtered == {"blank line": 1}
    short = read_pairs(path, min_length=2)
    assert short.users == ["u2", "u1"]
    assert short.filtered == {"blank line": 1, "sequence shorter than 2": 1}


@pytest.mark.parametrize(("line", "n"), [("u1 a b", "3 fields"), ("u1", "1 field")])
def test_pairs_wrong_field_count(tmp_path: Path, line: str, n: str) -> None:
    path = write(tmp_path / "pairs.txt", f"u1 a\nu2 b\n{line}\n")
    with pytest.raises(DataFormatError, match=rf"^pairs\.txt:3: expected 'user item', got {n}$"):
        read_pairs(path)


# --- csv ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_csv_sniffs_delimiter_and_sorts_by_time(tmp_path: Path, delimiter: str) -> None:
    rows = [
        ["session_id", "user_id", "item_id", "timestamp"],
        ["s1", "NA", "a", "30"],
        ["s2", "", "x", "5"],
        ["s1", "NA", "b", "10"],
        ["s1", "NA", "c", "10"],  # tie with b: file order is kept
        ["s2", "", "y", "1.5"],
    ]
    path = write(tmp_path / "log.csv", "\n".join(delimiter.join(r) for r in rows) + "\n")
    ds = read_csv(path)
    assert ds.name == "log"
    assert ds.users == ["s1", "s2"]
    assert ds.sequences == [["b", "c", "a"], ["y", "x"]]
    assert not ds.filtered


def test_csv_iso_dates_group_by_user_and_aliases(tmp_path: Path) -> None:
    text = (
        "userId,itemId,eventdate\n"
        "u1,a,2016-05-09T10:00:00\n"
        "u2,x,2016-05-01\n"
        "u1,b,2016-05-08\n"
        ",q,2016-05-08\n"
        "u1,c,2016-05-09T09:00:00+00:00\n"
    )
    ds = read_csv(write(tmp_path / "log.csv", text), group_by="user")
    assert ds.users == ["u1", "u2"]
    assert ds.sequences == [["b", "c", "a"], ["x"]]
    assert ds.filtered == {"row without user id": 1}


def test_csv_explicit_columns_without_time_keep_file_order(tmp_path: Path) -> None:
    text = "sess;product;when\n1;b;9\n1;a;1\n2;c;3\n\n"
    ds = read_csv(write(tmp_path / "log.csv", text), session_col="sess", item_col="product")
    assert ds.sequences == [["b", "a"], ["c"]]
    assert ds.filtered == {"blank line": 1}
    timed = read_csv(tmp_path / "log.csv", delimiter=";", session_col="sess", item_col="product", time_col="when")
    assert timed.sequences == [["a", "b"], ["c"]]


def test_csv_min_length(tmp_path: Path) -> None:
    text = "session_id,item_id\n1,a\n1,b\n2,c\n"
    ds = read_csv(write(tmp_path / "log.csv", text), min_length=2)
    assert ds.users == ["1"]
    assert ds.filtered == {"sequence shorter than 2": 1}


def test_csv_unknown_column_lists_header(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", "session_id,item_id\n1,a\n")
    with pytest.raises(
        DataFormatError,
        match=r"^log\.csv:1: no time column 'when'; header columns: "
        r"\['session_id', 'item_id'\]",
    ):
        read_csv(path, time_col="when")
    with pytest.raises(DataFormatError, match=r"^log\.csv:1: no user column .*header columns"):
        read_csv(path, group_by="user")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("2,b", r"expected 3 fields separated by ',' as in the header, got 2"),
        ("2,b,1,extra", r"expected 3 fields separated by ',' as in the header, got 4"),
        ("2,,1", r"missing item id in column 'item_id'"),
        ("2,b,soon", r"time 'soon' in column 'ts' is not a number"),
    ],
)
def test_csv_bad_rows_name_the_line(tmp_path: Path, row: str, message: str) -> None:
    path = write(tmp_path / "clicks.csv", f"session_id,item_id,ts\n1,a,1\n\n{row}\n")
    with pytest.raises(DataFormatError, match=rf"^clicks\.csv:4: {message}"):
        read_csv(path)


def test_csv_bad_arguments(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", "session_id,item_id\n1,a\n")
    with pytest.raises(ValueError, match="group_by"):
        read_csv(path, group_by="day")
    with pytest.raises(DataFormatError, match=r"^nodelim\.csv:1: cannot tell the delimiter"):
        read_csv(write(tmp_path / "nodelim.csv", "items\na\n"))


# --- dispatch -------------------------------------------------------------------------------------


def test_read_sessions_auto_detects_each_format(tmp_path: Path) -> None:
    pairs = write(tmp_path / "p.txt", "u1 a\n\nu1 b\nu2 c\n")
    lines = write(tmp_path / "l.txt", "u1 a\nu2 b c\nu3 d\n")  # one line with >2 fields is enough
    table = write(tmp_path / "t.tsv", "session\titem\n1\ta\n1\tb\n")
    assert read_sessions(pairs).sequences == [["a", "b"], ["c"]]
    assert read_sessions(lines).sequences == [["a"], ["b", "c"], ["d"]]
    assert read_sessions(table).sequences == [["a", "b"]]
    assert read_sessions(table, min_length=3).filtered == {"sequence shorter than 3": 1}
    with pytest.raises(ValueError, match="unknown format"):
        read_sessions(pairs, fmt="parquet")
    with pytest.raises(TypeError, match="only apply to csv"):
        read_sessions(pairs, delimiter=",")


def test_read_sessions_forced_format_reports_its_errors(tmp_path: Path) -> None:
    path = write(tmp_path / "p.txt", "u1 a\nu1 b\n")
    with pytest.raises(DataFormatError, match=r"^p\.txt:2: user 'u1' already appeared on line 1$"):
        read_sessions(path, fmt="user_lines")


# --- the real data --------------------------------------------------------------------------------


def test_real_beauty_counts() -> None:
    ds = read_sessions(real_file("beauty.txt"))
    assert ds.name == "beauty"
    assert len(ds.users) == 22_363
    assert len(ds.items()) == 12_101
    assert ds.n_interactions == 198_502
    assert not ds.filtered


def test_real_toys_counts() -> None:
    ds = read_sessions(real_file("toys.txt"))
    assert (len(ds.users), len(ds.items()), ds.n_interactions) == (19_412, 11_924, 167_597)


def test_real_diginetica_groups_sessions_in_timeframe_order() -> None:
    path = real_file("diginetica-sample.csv")
    ds = read_sessions(path)
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter=";"))
    # the README says 12,390 clicks; the file has 12,391 data rows (its last line has no newline)
    assert ds.n_interactions == len(rows) == 12_391
    expected: dict[str, list[tuple[int, str]]] = {}
    for row in rows:
        expected.setdefault(row["session_id"], []).append((int(row["timeframe"]), row["item_id"]))
    assert ds.users == list(expected)
    assert ds.sequences == [[item for _, item in sorted(v, key=lambda p: p[0])] for v in expected.values()]
    assert ds.sequences[0][:3] == ["9654", "33043", "32118"]  # session 1, timeframes 75848, 173912, 243569
