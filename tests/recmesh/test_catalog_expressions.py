"""The filter language: what parses (and into which tree), what is rejected and where, type checks, caps, and the
vectorised masks agreeing with the one-item reference ``matches`` on random catalogues and random expressions."""

from __future__ import annotations

import numpy as np
import pytest

from recmesh.catalog import expressions
from recmesh.catalog.expressions import (
    MAX_DEPTH,
    MAX_EXPRESSION_CHARS,
    And,
    Attr,
    Compare,
    Const,
    Exists,
    ExpressionError,
    In,
    MaskCache,
    Not,
    Or,
    compile_expression,
    parse,
)
from recmesh.catalog.table import AttrType, Catalog

# --- parsing -----------------------------------------------------------------------------------------------

ACCEPTED = [
    ("available", Attr("available", 0)),
    ("  available  ", Attr("available", 2)),
    ("true", Const(True, 0)),
    ("false or true", Or((Const(False, 0), Const(True, 9)))),
    ("price < 50", Compare("price", "<", 50, 0)),
    ("price<=-2.5", Compare("price", "<=", -2.5, 0)),
    ("price >= 1e3", Compare("price", ">=", 1000.0, 0)),
    ("price > .5E-1", Compare("price", ">", 0.05, 0)),
    ("price != 3.", Compare("price", "!=", 3.0, 0)),
    ('category == "shoes"', Compare("category", "==", "shoes", 0)),
    ("category == 'shoes'", Compare("category", "==", "shoes", 0)),
    ("available == false", Compare("available", "==", False, 0)),
    ("category in (\"a\", 'b')", In("category", ("a", "b"), False, 0)),
    ("price not in (1, 2.5, -3)", In("price", (1, 2.5, -3), True, 0)),
    ("exists(price)", Exists("price", 0)),
    ("exists ( price )", Exists("price", 0)),
    ("not available", Not(Attr("available", 4), 0)),
    ("not not a", Not(Not(Attr("a", 8), 4), 0)),
    ("(a)", Attr("a", 1)),
    ("a and b and c", And((Attr("a", 0), Attr("b", 6), Attr("c", 12)))),
    # precedence: not > and > or
    ("a or b and not c", Or((Attr("a", 0), And((Attr("b", 5), Not(Attr("c", 15), 11)), 5)))),
    ("(a or b) and c", And((Or((Attr("a", 1), Attr("b", 6)), 1), Attr("c", 13)), 1)),
    ("not a == 1", Not(Compare("a", "==", 1, 4), 0)),
    # keywords are whole words and lower case; anything else is a name
    ("andy or notable", Or((Attr("andy", 0), Attr("notable", 8)))),
    ("AND", Attr("AND", 0)),
    ("_x9 and été", And((Attr("_x9", 0), Attr("été", 8)))),
]


@pytest.mark.parametrize(("text", "tree"), ACCEPTED, ids=[t for t, _ in ACCEPTED])
def test_parse_accepts(text: str, tree: expressions.Expr) -> None:
    assert parse(text) == tree


REJECTED = [
    ("price <", 7, "expected a value after '<'"),
    ("price <   ", 7, "expected a value after '<'"),
    ("price < and b", 8, "expected a value after '<', found 'and'"),
    ("a b", 2, "found 'b'"),
    ("(a", 2, "expected ')' after 'a'"),
    ("a)", 1, "found ')'"),
    ("a in ()", 6, "expected a value after '('"),
    ("a in (1,", 8, "expected a value after ','"),
    ("a in 1", 5, "expected '('"),
    ("a and", 5, "expected a condition after 'and'"),
    ("or a", 0, "at the start"),
    ("not", 3, "expected a condition after 'not'"),
    ("exists", 6, "expected '(' after 'exists'"),
    ("exists(1)", 7, "expected an attribute name"),
    ("5 < price", 0, "found '5'"),
    ("a == b", 5, "expected a value after '=='"),
    ("a = 1", 2, "unexpected '=' (compare with '==')"),
    ("a && b", 2, "use 'and'"),
    ('a == "open', 5, "unterminated string"),
    ("a == 'it\\'s", 5, "unterminated string"),
    ("a == 1 $", 7, "unexpected character '$'"),
    ("a == - 1", 5, "unexpected character '-'"),
    ("A == 1 AND b", 7, "found 'AND'"),
    ("a == TRUE", 5, "expected a value after '=='"),
    ("", 0, "empty expression"),
    ("   ", 0, "empty expression"),
    ('a == "x\\q"', 7, "unknown escape '\\q'"),
    ('a == "\\u12"', 6, "unknown escape '\\u'"),
    ("a == 1e999", 5, "out of range"),
    ("a == " + "9" * 400, 5, "out of range"),
]


@pytest.mark.parametrize(("text", "position", "message"), REJECTED, ids=[t for t, _, _ in REJECTED])
def test_parse_rejects_with_position(text: str, position: int, message: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        parse(text)
    assert caught.value.position == position
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_syntax_error_names_the_column() -> None:
    with pytest.raises(ExpressionError, match=r"^syntax error at column 14: expected a value after '<'$"):
        parse("a and price <")


def test_parse_is_cached_and_rejects_non_strings() -> None:
    assert parse("a and b") is parse("a and b")
    with pytest.raises(ExpressionError, match="must be a string"):
        parse(None)  # type: ignore[arg-type]
    with pytest.raises(ExpressionError, match="must be a string"):
        compile_expression(["a"], {"a": "boolean"})  # type: ignore[arg-type]


def test_escapes() -> None:
    cases = {
        r'"say \"hi\""': 'say "hi"',
        r"'it\'s'": "it's",
        r'"back\\slash"': "back\\slash",
        r'"a\nb\tc\rd\/"': "a\nb\tc\rd/",
        r'"caf\u00e9"': "café",
        "'both \" quotes'": 'both " quotes',
        '"tab\tinside"': "tab\tinside",
    }
    for literal, value in cases.items():
        assert parse(f"s == {literal}") == Compare("s", "==", value, 0), literal


# --- caps --------------------------------------------------------------------------------------------------


def test_length_cap() -> None:
    text = "a or " * (MAX_EXPRESSION_CHARS // 5 - 1) + "a"
    assert len(text) <= MAX_EXPRESSION_CHARS
    parse(text)
    with pytest.raises(ExpressionError, match=f"longer than {MAX_EXPRESSION_CHARS} characters") as caught:
        parse(text + " or a")
    assert caught.value.position is None


def test_depth_cap_parentheses_not_and_mixed() -> None:
    parse("(" * MAX_DEPTH + "a" + ")" * MAX_DEPTH)
    with pytest.raises(ExpressionError, match=f"at most {MAX_DEPTH} levels") as caught:
        parse("(" * (MAX_DEPTH + 1) + "a" + ")" * (MAX_DEPTH + 1))
    assert caught.value.position == 0  # the outermost parenthesis is the 33rd level
    parse("not " * MAX_DEPTH + "a")
    with pytest.raises(ExpressionError, match="nested too deeply"):
        parse("not " * (MAX_DEPTH + 1) + "a")
    # each (x and ...) level counts twice: the parenthesis and the 'and'
    parse("a and (" * (MAX_DEPTH // 2 - 1) + "b" + ")" * (MAX_DEPTH // 2 - 1))
    with pytest.raises(ExpressionError, match="nested too deeply"):
        parse("a and (" * (MAX_DEPTH // 2 + 1) + "b" + ")" * (MAX_DEPTH // 2 + 1))
    # a long flat chain is one level, not one per operand
    parse(" and ".join(["a"] * 150))
    # far beyond the cap (the parser itself is not recursive) still a clean error
    with pytest.raises(ExpressionError, match="nested too deeply"):
        parse("(" * 499 + "a" + ")" * 499)


def test_in_values_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    # 1000 values cannot fit in 1000 characters, so the cap is checked with a lower one
    monkeypatch.setattr(expressions, "MAX_IN_VALUES", 3)
    parse("cap_test in (1, 2, 3)")
    with pytest.raises(ExpressionError, match=r"has 4 values \(at most 3\)") as caught:
        parse("x and cap_test in (1, 2, 3, 4)")
    assert caught.value.position == 6


# --- type checks -------------------------------------------------------------------------------------------

SCHEMA: dict[str, AttrType] = {"price": "number", "category": "string", "available": "boolean", "date": "string"}

TYPE_ERRORS = [
    ('price == "x"', 0, "'price' is a number, it cannot be compared with the string \"x\""),
    ("a_ok and category < 5", 9, "'category' is a string, it cannot be compared with the number 5"),
    ("available == 1", 0, "cannot be compared with the number 1"),
    ("price == true", 0, "cannot be compared with the boolean true"),
    ("available < true", 0, "only == and != apply, not <"),
    ("price", 0, "'price' is a number, not a boolean"),
    ("available and not (category)", 19, "'category' is a string, not a boolean"),
    ('category in ("a", 1)', 0, "the list holds the number 1"),
    ("price not in (1, 'b')", 0, 'the list holds the string "b"'),
    ("available in (true, 0)", 0, "the list holds the number 0"),
]


@pytest.mark.parametrize(("text", "position", "message"), TYPE_ERRORS, ids=[t for t, _, _ in TYPE_ERRORS])
def test_type_errors(text: str, position: int, message: str) -> None:
    schema = {**SCHEMA, "a_ok": "boolean"}
    with pytest.raises(ExpressionError) as caught:
        compile_expression(text, schema)  # type: ignore[arg-type]
    assert caught.value.position == position
    assert message in str(caught.value)
    assert f"column {position + 1}" in str(caught.value)


def test_well_typed_expressions_compile() -> None:
    expression = compile_expression(
        'available and category in ("a", "b") and price < 5 and price in (1, 2.5) and date >= "2024-01-01" '
        "and exists(price) and available != false",
        SCHEMA,
    )
    assert expression.attributes == frozenset({"available", "category", "price", "date"})
    assert compile_expression("true", {}).attributes == frozenset()


def test_unknown_attribute_lists_known_ones() -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_expression("available and colour == 'red'", SCHEMA)
    assert caught.value.position == 14
    assert str(caught.value) == (
        "unknown attribute 'colour' at column 15; known attributes: available, category, date, price"
    )
    many: dict[str, AttrType] = {f"attr{i:02d}": "number" for i in range(25)}
    with pytest.raises(ExpressionError) as caught:
        compile_expression("exists(nope)", many)
    message = str(caught.value)
    assert "attr00, attr01" in message and "attr19 and 5 more" in message and "attr20" not in message
    with pytest.raises(ExpressionError, match="the catalogue has no attributes"):
        compile_expression("x", {})


# --- evaluation --------------------------------------------------------------------------------------------


def small_catalog() -> Catalog:
    return Catalog.of(
        [
            ("a", {"category": "shoes", "price": 30, "available": True, "date": "2024-03-01"}),
            ("b", {"category": "bags", "price": 80.5, "available": False, "date": "2023-12-31"}),
            ("c", {"category": "hats"}),
            ("d", {}),
        ]
    )


def test_masks_on_a_small_catalogue() -> None:
    catalog = small_catalog()
    schema = {**catalog.schema, "ghost": "number"}

    def passing(text: str) -> list[str]:
        mask = compile_expression(text, schema).mask(catalog)
        assert mask.dtype == np.bool_ and mask.shape == (len(catalog),)
        return [item for item, keep in zip(catalog.ids, mask, strict=True) if keep]

    assert passing('available and category in ("shoes", "bags") and price < 50') == ["a"]
    assert passing("available") == ["a"]
    assert passing("not available") == ["b", "c", "d"]  # plain boolean logic over absent values
    assert passing("price < 50") == ["a"]
    assert passing("not price < 50") == ["b", "c", "d"]
    assert passing("price != 30") == ["b"]  # absent never matches a comparison
    assert passing('category not in ("shoes")') == ["b", "c"]
    assert passing('not category in ("shoes")') == ["b", "c", "d"]
    assert passing("exists(price)") == ["a", "b"]
    assert passing('date >= "2024-01-01"') == ["a"]  # ISO dates order as strings
    assert passing('category > "c"') == ["a", "c"]
    assert passing('category == "boots"') == []  # a value no item has
    assert passing('category != "boots"') == ["a", "b", "c"]
    assert passing("ghost > 1 or exists(ghost)") == []  # in the schema, in no item
    assert passing("not exists(ghost)") == ["a", "b", "c", "d"]
    assert passing("true") == ["a", "b", "c", "d"]
    assert passing("false or available == false") == ["b"]


def test_stale_values_behind_removed_attributes_do_not_match() -> None:
    catalog = small_catalog()
    catalog.upsert("a", {"price": None, "available": None, "category": None}, merge=True)
    expression = compile_expression('available or price == 30 or price in (30) or category == "shoes"', catalog.schema)
    assert not expression.mask(catalog)[0]
    assert not expression.matches(catalog.get("a") or {})


def test_mask_rows_and_rows_outside() -> None:
    catalog = small_catalog()
    expression = compile_expression("price > 10", catalog.schema)
    rows = np.array([1, -1, 0, 3, 99, 1, -7], dtype=np.int64)
    assert expression.mask_rows(catalog, rows).tolist() == [True, False, True, False, False, True, False]
    assert expression.mask_rows(catalog, np.array([], dtype=np.int64)).tolist() == []
    assert compile_expression("true", {}).mask_rows(catalog, np.array([-1, 0])).tolist() == [False, True]
    with pytest.raises(ExpressionError, match="1-D integer array"):
        expression.mask_rows(catalog, np.array([0.5]))
    empty = Catalog()
    assert expression.mask(empty).shape == (0,)
    assert expression.mask_rows(empty, np.array([-1, 0])).tolist() == [False, False]


def test_matches_reference_and_bad_item_values() -> None:
    expression = compile_expression("price < 50 and available", SCHEMA)
    assert expression.matches({"price": 20, "available": True})
    assert expression.matches({"price": 20.0, "available": True, "other": "x"})
    assert not expression.matches({"price": None, "available": True})
    assert not expression.matches({})
    with pytest.raises(ExpressionError, match="'price' should be a number"):
        expression.matches({"price": "cheap"})
    with pytest.raises(ExpressionError, match="'price'"):
        expression.matches({"price": [1]})


def test_schema_mismatch_with_the_catalogue_is_an_error() -> None:
    catalog = small_catalog()
    expression = compile_expression("category == 5", {"category": "number"})
    with pytest.raises(ExpressionError, match="'category' is a string in this catalogue") as caught:
        expression.mask(catalog)
    assert caught.value.position == 0


# --- masks agree with the reference on random catalogues ----------------------------------------------------

CATEGORIES = [f"cat{i:02d}" for i in range(20)]
BRANDS = ["acme", "Beta", "b\u00e9ta", 'q"uote']


def random_catalog(rng: np.random.Generator, n: int) -> Catalog:
    catalog = Catalog()
    for i in range(n):
        attrs: dict[str, object] = {}
        if rng.random() < 0.85:
            attrs["category"] = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
        if rng.random() < 0.7:
            attrs["brand"] = BRANDS[int(rng.integers(len(BRANDS)))]
        if rng.random() < 0.8:
            attrs["price"] = int(rng.integers(-5, 100)) if rng.random() < 0.5 else float(rng.normal(40, 30))
        if rng.random() < 0.8:
            attrs["available"] = bool(rng.random() < 0.5)
        if rng.random() < 0.5:
            attrs["new"] = bool(rng.random() < 0.5)
        catalog.upsert(f"item{i}", attrs)
    for i in rng.choice(n, size=n // 10, replace=False):  # leave stale values behind absent ones
        catalog.upsert(f"item{i}", {"price": None, "available": None, "brand": None}, merge=True)
    return catalog


def quote(text: str, rng: np.random.Generator) -> str:
    if rng.random() < 0.5:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def random_literal(kind: str, rng: np.random.Generator) -> str:
    if kind == "number":
        choice = rng.random()
        if choice < 0.4:
            return str(int(rng.integers(-10, 110)))
        if choice < 0.8:
            return repr(round(float(rng.normal(40, 30)), 2))
        return f"{float(rng.uniform(0.1, 9.9)):.1f}e1"
    if kind == "boolean":
        return "true" if rng.random() < 0.5 else "false"
    pool = CATEGORIES + BRANDS + ["cat", "cat99", "", "zzz"]
    return quote(pool[int(rng.integers(len(pool)))], rng)


def random_condition(schema: dict[str, AttrType], rng: np.random.Generator) -> str:
    name = list(schema)[int(rng.integers(len(schema)))]
    kind = schema[name]
    roll = rng.random()
    if roll < 0.1:
        return f"exists({name})"
    if roll < 0.2:
        return ["true", "false"][int(rng.integers(2))]
    if kind == "boolean" and roll < 0.4:
        return name
    if roll < 0.65:
        # between 1 and 14 values: both sides of the equality / table switch in the string path
        values = ", ".join(random_literal(kind, rng) for _ in range(int(rng.integers(1, 15))))
        negated = "not " if rng.random() < 0.5 else ""
        return f"{name} {negated}in ({values})"
    ops = ["==", "!="] if kind == "boolean" else ["==", "!=", "<", "<=", ">", ">="]
    return f"{name} {ops[int(rng.integers(len(ops)))]} {random_literal(kind, rng)}"


def random_expression(schema: dict[str, AttrType], rng: np.random.Generator, depth: int = 0) -> str:
    roll = rng.random()
    if depth >= 3 or roll < 0.35:
        return random_condition(schema, rng)
    if roll < 0.5:
        return "not " + random_expression(schema, rng, depth + 1)
    operator = " and " if roll < 0.75 else " or "
    parts = [random_expression(schema, rng, depth + 1) for _ in range(int(rng.integers(2, 4)))]
    return "(" + operator.join(parts) + ")"


def test_masks_match_the_reference_on_random_catalogues() -> None:
    rng = np.random.default_rng(20261201)
    checked = 0
    for _ in range(3):
        catalog = random_catalog(rng, int(rng.integers(300, 600)))
        schema: dict[str, AttrType] = {**catalog.schema, "ghost": "string", "ghost_n": "number"}
        items = [catalog.get(item_id) or {} for item_id in catalog.ids]
        for _ in range(150):
            text = random_expression(schema, rng)
            while len(text) > MAX_EXPRESSION_CHARS:
                text = random_expression(schema, rng)
            expression = compile_expression(text, schema)
            expected = np.array([expression.matches(attrs) for attrs in items], dtype=bool)
            assert (expression.mask(catalog) == expected).all(), text
            rows = rng.integers(-1, len(catalog) + 3, size=40)
            inside = (rows >= 0) & (rows < len(catalog))
            expected_rows = np.where(inside, expected[np.where(inside, rows, 0)], False)
            assert (expression.mask_rows(catalog, rows) == expected_rows).all(), text
            assert expression.matches({}) == bool(compile_expression(text, schema).mask(Catalog.of([("x", {})]))[0])
            checked += 1
    assert checked == 450


# --- cached masks ------------------------------------------------------------------------------------------


def test_mask_cache_recomputes_after_changes_only() -> None:
    catalog = small_catalog()
    cache = MaskCache(catalog, size=2)
    first = cache.mask("price < 50")
    assert first.tolist() == [True, False, False, False]
    assert cache.mask("price < 50") is first
    assert cache.pass_fraction("price < 50") == 0.25
    with pytest.raises(ValueError, match="read-only"):
        first[0] = False
    catalog.upsert("e", {"price": 1})
    second = cache.mask("price < 50")
    assert second is not first and second.tolist() == [True, False, False, False, True]
    assert cache.pass_fraction("price < 50") == 0.4
    # an Expression is cached under its text
    expression = compile_expression("exists(category)", catalog.schema)
    assert cache.mask(expression).tolist() == [True, True, True, False, False]
    assert cache.mask("exists(category)") is cache.mask(expression)
    # LRU: a third text evicts the least recently used
    cache.mask("available")
    assert len(cache) == 2
    with pytest.raises(ExpressionError, match="unknown attribute"):
        cache.mask("colour == 'red'")
    with pytest.raises(ExpressionError, match="must be a string"):
        cache.mask(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 1"):
        MaskCache(catalog, size=0)


def test_mask_cache_on_an_empty_catalogue() -> None:
    cache = MaskCache(Catalog())
    assert cache.mask("true").shape == (0,)
    assert cache.pass_fraction("true") == 0.0


def test_mask_cache_sees_attributes_added_later() -> None:
    catalog = small_catalog()
    cache = MaskCache(catalog)
    with pytest.raises(ExpressionError, match="unknown attribute 'colour'"):
        cache.mask("colour == 'red'")
    catalog.upsert("d", {"colour": "red"})
    assert cache.mask("colour == 'red'").tolist() == [False, False, False, True]
