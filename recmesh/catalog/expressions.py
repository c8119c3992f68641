"""The filter language over catalogue attributes, parsed with lark (LALR) and compiled to vectorised numpy masks.

Grammar (keywords are lower case; ``not`` binds tighter than ``and``, ``and`` tighter than ``or``)::

    price < 50 and category in ("shoes", 'bags') and not brand == "acme"
    available or exists(discount)          # a bare name is a boolean attribute that is true
    sku not in (1, 2, 3) and released >= "2024-01-01"

Comparisons are ``== != < <= > >=`` between an attribute (left) and a literal: a string (double or single quotes,
backslash escapes ``\\" \\' \\\\ \\n \\t \\r \\/ \\uXXXX``), a number (``-1``, ``2.5``, ``1e3``) or ``true`` /
``false``. Strings order lexicographically (so ISO dates compare as dates); booleans allow only ``==`` and ``!=``.
An item without an attribute never matches a comparison, ``in`` or ``not in`` on it, so ``not price < 5`` is
true for an item with no price while ``price >= 5`` is not. Attribute names cannot be the keywords ``and or not
in exists true false``.

Usage::

    expression = compile_expression('available and price < 50', catalog.schema)
    expression.mask(catalog)                   # bool per row of the catalogue
    expression.mask_rows(catalog, rows)        # bool per given row (-1: an id not in the catalogue -> False)
    expression.matches({"price": 20, "available": True})
    MaskCache(catalog).mask("available")       # recomputed only after the catalogue changes
"""

from __future__ import annotations

import functools
import json
import operator
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, cast

import numpy as np
from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from recmesh.catalog.table import AttrType, Catalog, CatalogError, Column, type_of

MAX_EXPRESSION_CHARS = 1000
MAX_DEPTH = 32  # nested parentheses / not / and / or levels
MAX_IN_VALUES = 1000
MAX_NAMES_SHOWN = 20  # known attributes listed in an unknown-attribute error

Scalar = str | int | float | bool


class ExpressionError(ValueError):
    """A filter that cannot be parsed, type-checked or evaluated. ``position``: 0-based character offset of the
    problem in the text, or None; the message's ``column`` is 1-based (position + 1)."""

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message)
        self.position = position


# --- the syntax tree (schema-free) -------------------------------------------------------------------------
# ``position`` is where the node starts in the text; ``depth`` (not compared) is its nesting, checked while parsing.


@dataclass(frozen=True)
class Const:
    value: bool
    position: int = 0
    depth: int = field(default=0, compare=False, repr=False)


@dataclass(frozen=True)
class Attr:
    """A bare attribute name: the boolean attribute is true."""

    name: str
    position: int = 0
    depth: int = field(default=0, compare=False, repr=False)


@dataclass(frozen=True)
class Exists:
    name: str
    position: int = 0
    depth: int = field(default=0, compare=False, repr=False)


@dataclass(frozen=True)
class Compare:
    name: str
    op: str
    value: Scalar
    position: int = 0
    depth: int = field(default=0, compare=False, repr=False)


@dataclass(frozen=True)
class In:
    name: str
    values: tuple[Scalar, ...]
    negated: bool = False
    position: int = 0
    depth: int = field(default=0, compare=False, repr=False)


@dataclass(frozen=True)
class Not:
    operand: Expr
    position: int = 0
    depth: int = field(default=1, compare=False, repr=False)


@dataclass(frozen=True)
class And:
    operands: tuple[Expr, ...]
    position: int = 0
    depth: int = field(default=1, compare=False, repr=False)


@dataclass(frozen=True)
class Or:
    operands: tuple[Expr, ...]
    position: int = 0
    depth: int = field(default=1, compare=False, repr=False)


Expr = Const | Attr | Exists | Compare | In | Not | And | Or

# --- parsing -----------------------------------------------------------------------------------------------

_GRAMMAR = r"""
?start: disjunction
?disjunction: conjunction | conjunction ("or" conjunction)+      -> or_
?conjunction: negation | negation ("and" negation)+              -> and_
?negation: NOT negation                                          -> not_
         | atom
?atom: NAME OP value                                             -> compare
     | NAME "in" "(" value ("," value)* ")"                      -> in_
     | NAME NOT "in" "(" value ("," value)* ")"                  -> not_in
     | EXISTS "(" NAME ")"                                       -> exists
     | NAME                                                      -> attr
     | TRUE                                                      -> const
     | FALSE                                                     -> const
     | LPAR disjunction ")"                                      -> group
value: STRING | NUMBER | TRUE | FALSE
NOT: "not"
EXISTS: "exists"
TRUE: "true"
FALSE: "false"
LPAR: "("
OP: "==" | "!=" | "<=" | ">=" | "<" | ">"
NAME: /[^\W\d]\w*/
STRING: /"(?:[^"\\]|\\.)*"/s | /'(?:[^'\\]|\\.)*'/s
NUMBER: /-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?/
%ignore /\s+/
"""

_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "/": "/", "n": "\n", "t": "\t", "r": "\r"}


def _at(token: Token) -> int:
    return token.start_pos or 0


def _nested(node: Expr, position: int | None = None) -> Expr:
    """The node, or ExpressionError if it is deeper than MAX_DEPTH (at ``position``, by default the node's)."""
    if node.depth > MAX_DEPTH:
        where = node.position if position is None else position
        raise ExpressionError(f"expression nested too deeply at column {where + 1} (at most {MAX_DEPTH} levels)", where)
    return node


def _unquote(token: Token) -> str:
    """The string literal's text with its escapes resolved; ExpressionError at an unknown escape."""
    body, start = token.value[1:-1], _at(token) + 1
    if "\\" not in body:
        return body
    out: list[str] = []
    i = 0
    while i < len(body):
        char = body[i]
        if char != "\\":
            out.append(char)
            i += 1
            continue
        code = body[i + 1]  # the lexer guarantees a character after every backslash
        if code in _ESCAPES:
            out.append(_ESCAPES[code])
            i += 2
        elif code == "u" and len(body) >= i + 6 and all(c in "0123456789abcdefABCDEF" for c in body[i + 2 : i + 6]):
            out.append(chr(int(body[i + 2 : i + 6], 16)))
            i += 6
        else:
            where = start + i
            raise ExpressionError(f"unknown escape '\\{code}' at column {where + 1}", where)
    return "".join(out)


def _number(token: Token) -> int | float:
    text = token.value
    value: int | float = float(text) if any(c in text for c in ".eE") else int(text)
    try:
        finite = bool(np.isfinite(float(value)))
    except OverflowError:
        finite = False
    if not finite:
        raise ExpressionError(f"number {text} at column {_at(token) + 1} is out of range", _at(token))
    return value


class _Build(Transformer[Token, Any]):
    """Builds the tree while the LALR parser reduces (no intermediate parse tree); stateless, so one is shared."""

    def or_(self, operands: list[Expr]) -> Expr:
        return _nested(Or(tuple(operands), operands[0].position, 1 + max(o.depth for o in operands)))

    def and_(self, operands: list[Expr]) -> Expr:
        return _nested(And(tuple(operands), operands[0].position, 1 + max(o.depth for o in operands)))

    def not_(self, children: list[Any]) -> Expr:
        keyword, operand = children
        return _nested(Not(operand, _at(keyword), operand.depth + 1))

    def group(self, children: list[Any]) -> Expr:
        paren, inner = children
        # parentheses add a level, not a node; too deep points at the parenthesis
        return _nested(replace(inner, depth=inner.depth + 1), _at(paren))

    def compare(self, children: list[Any]) -> Expr:
        name, op, value = children
        return Compare(name.value, op.value, value, _at(name))

    def in_(self, children: list[Any]) -> Expr:
        return self._membership(children[0], children[1:], negated=False)

    def not_in(self, children: list[Any]) -> Expr:
        return self._membership(children[0], children[2:], negated=True)

    def _membership(self, name: Token, values: list[Scalar], negated: bool) -> Expr:
        if len(values) > MAX_IN_VALUES:
            raise ExpressionError(
                f"'in' list at column {_at(name) + 1} has {len(values)} values (at most {MAX_IN_VALUES})",
                _at(name),
            )
        return In(name.value, tuple(values), negated, _at(name))

    def exists(self, children: list[Token]) -> Expr:
        keyword, name = children
        return Exists(name.value, _at(keyword))

    def attr(self, children: list[Token]) -> Expr:
        return Attr(children[0].value, _at(children[0]))

    def const(self, children: list[Token]) -> Expr:
        return Const(children[0].type == "TRUE", _at(children[0]))

    def value(self, children: list[Token]) -> Scalar:
        token = children[0]
        if token.type == "STRING":
            return _unquote(token)
        if token.type == "NUMBER":
            return _number(token)
        return token.type == "TRUE"


@functools.cache
def _parser() -> Lark:
    # the basic lexer keeps keywords reserved everywhere (the contextual one would read "or" as a name where
    # "or" cannot follow)
    return Lark(_GRAMMAR, parser="lalr", lexer="basic", transformer=_Build())


def parse(text: str) -> Expr:
    """The syntax tree of a filter (no schema needed), or ExpressionError with the position of the problem."""
    if not isinstance(text, str):
        raise ExpressionError(f"an expression must be a string, not {type(text).__name__}")
    return _parse_text(text)


@functools.lru_cache(maxsize=1024)
def _parse_text(text: str) -> Expr:
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(f"expression is longer than {MAX_EXPRESSION_CHARS} characters ({len(text)})")
    if not text.strip():
        raise ExpressionError("empty expression", 0)
    try:
        tree: Expr = cast(Expr, _parser().parse(text))  # the transformer builds Expr nodes
    except UnexpectedInput as e:
        raise _syntax_error(text, e) from None
    return tree


# --- syntax error messages ---------------------------------------------------------------------------------

_VALUES = {"STRING", "NUMBER", "TRUE", "FALSE"}
_DESCRIBED = {  # in the order they are listed in a message
    "OP": "a comparison operator",
    "IN": "'in'",
    "NOT": "'not in'",
    "COMMA": "','",
    "RPAR": "')'",
    "AND": "'and'",
    "OR": "'or'",
    "LPAR": "'('",
    "NAME": "an attribute name",
    "$END": "the end",
}


def _expected(names: set[str]) -> str:
    if "NAME" in names and "LPAR" in names:
        return "a condition"  # where a term starts: a name, not, exists(...), true, false or (
    described = [text for name, text in _DESCRIBED.items() if name in names]
    if names & _VALUES:
        described.insert(0, "a value")
    if not described:
        return "something else"
    return described[0] if len(described) == 1 else ", ".join(described[:-1]) + " or " + described[-1]


def _previous_token(text: str, position: int) -> str | None:
    try:
        tokens = list(_parser().lex(text[:position]))
    except UnexpectedInput:
        return None
    return tokens[-1].value if tokens else None


def _syntax_error(text: str, e: UnexpectedInput) -> ExpressionError:
    if isinstance(e, UnexpectedCharacters):
        position = e.pos_in_stream or 0
        char = text[position]
        if char in "\"'":
            problem = "unterminated string"
        elif char == "=":
            problem = "unexpected '=' (compare with '==')"
        elif char in "&|!":
            problem = f"unexpected {char!r} (use 'and', 'or', 'not')"
        else:
            problem = f"unexpected character {char!r}"
        return ExpressionError(f"syntax error at column {position + 1}: {problem}", position)
    assert isinstance(e, UnexpectedToken)
    at_end = e.token.type == "$END"
    position = len(text.rstrip()) if at_end else _at(e.token)
    try:
        names = set(e.accepts)  # exact: replays the reductions, unlike the LALR lookahead set
    except Exception:  # noqa: BLE001 - the message still has e.expected
        names = set(e.expected)
    previous = _previous_token(text, position)
    where = f"after {previous!r}" if previous else "at the start"
    found = "" if at_end else f", found {e.token.value!r}"
    return ExpressionError(
        f"syntax error at column {position + 1}: expected {_expected(names)} {where}{found}", position
    )


# --- type checking -----------------------------------------------------------------------------------------


def _describe(value: Scalar) -> str:
    if isinstance(value, bool):
        return f"the boolean {'true' if value else 'false'}"
    if isinstance(value, str):
        return f"the string {json.dumps(value, ensure_ascii=False)}"
    return f"the number {value!r}"


def _check(node: Expr, schema: Mapping[str, AttrType], names: set[str]) -> None:
    if isinstance(node, Const):
        return
    if isinstance(node, Not):
        _check(node.operand, schema, names)
        return
    if isinstance(node, And | Or):
        for operand in node.operands:
            _check(operand, schema, names)
        return
    kind = schema.get(node.name)
    if kind is None:
        known = sorted(schema)
        shown = ", ".join(known[:MAX_NAMES_SHOWN]) + (
            f" and {len(known) - MAX_NAMES_SHOWN} more" if len(known) > MAX_NAMES_SHOWN else ""
        )
        listing = f"known attributes: {shown}" if known else "the catalogue has no attributes"
        raise ExpressionError(
            f"unknown attribute {node.name!r} at column {node.position + 1}; {listing}", node.position
        )
    names.add(node.name)
    where = f"type error at column {node.position + 1}: {node.name!r} is a {kind}"
    if isinstance(node, Attr) and kind != "boolean":
        raise ExpressionError(f"{where}, not a boolean: compare it with a value", node.position)
    if isinstance(node, Compare):
        if type_of(node.value) != kind:
            raise ExpressionError(f"{where}, it cannot be compared with {_describe(node.value)}", node.position)
        if kind == "boolean" and node.op not in ("==", "!="):
            raise ExpressionError(f"{where}: only == and != apply, not {node.op}", node.position)
    if isinstance(node, In):
        for value in node.values:
            if type_of(value) != kind:
                raise ExpressionError(f"{where}, but the list holds {_describe(value)}", node.position)


# --- evaluation --------------------------------------------------------------------------------------------

_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


class _Rows:
    """The rows a mask is computed for: the catalogue's first len() rows (slices, no copy), or given rows
    (gathered; rows outside the catalogue read row 0 and are cleared by ``valid`` at the end)."""

    def __init__(self, catalog: Catalog, rows: np.ndarray | None = None) -> None:
        self.catalog = catalog
        self.valid: np.ndarray | None = None
        self.index: slice | np.ndarray
        if rows is None:
            self.size = len(catalog)
            self.index = slice(0, self.size)
            return
        rows = np.asarray(rows)
        if rows.ndim != 1 or not (rows.size == 0 or np.issubdtype(rows.dtype, np.integer)):
            raise ExpressionError(f"rows must be a 1-D integer array, got {rows.dtype} of shape {rows.shape}")
        self.size = rows.size
        valid = (rows >= 0) & (rows < len(catalog))
        self.index = np.where(valid, rows, 0)
        self.valid = None if valid.all() else valid

    def take(self, array: np.ndarray) -> np.ndarray:
        """The rows of a column array: a view for the full catalogue, a new array for given rows."""
        return array[self.index]

    def nothing(self) -> np.ndarray:
        return np.zeros(self.size, dtype=bool)


def _column(node: Attr | Exists | Compare | In, types: Mapping[str, AttrType], rows: _Rows) -> Column | None:
    column = rows.catalog.columns.get(node.name)
    if column is not None and column.type != types[node.name]:
        raise ExpressionError(
            f"attribute {node.name!r} is a {column.type} in this catalogue, the expression was checked for a "
            f"{types[node.name]}",
            node.position,
        )
    return column


_EQUALITY_CODES = 8  # up to this many values, == per value beats a gather over every row (measured)


def _equal_any(values: np.ndarray, targets: Any) -> np.ndarray:
    out = np.zeros(values.shape, dtype=bool)
    for target in targets:
        out |= values == target
    return out


def _codes_passing(codes: np.ndarray, passing: np.ndarray) -> np.ndarray:
    """Rows whose string code is one of the vocabulary entries marked in ``passing``; -1 (absent) never passes."""
    hits = np.flatnonzero(passing)
    if hits.size <= _EQUALITY_CODES:
        return _equal_any(codes, hits)
    misses = np.flatnonzero(~passing)
    if misses.size <= _EQUALITY_CODES:
        out: np.ndarray = codes >= 0
        for code in misses:
            out &= codes != code
        return out
    return np.take(np.append(passing, False), codes)  # -1 takes the final False


def _compare(node: Compare, column: Column, rows: _Rows) -> np.ndarray:
    op = _OPS[node.op]
    if column.type == "string":
        codes = rows.take(column.values)
        literal = str(node.value)
        if node.op in ("==", "!="):  # one code, no vocabulary scan
            code = column.code_of.get(literal)
            if node.op == "==":
                return rows.nothing() if code is None else codes == code
            return codes >= 0 if code is None else (codes != code) & (codes >= 0)
        # the comparison once per distinct string, then looked up by code
        passing = np.fromiter((op(word, literal) for word in column.vocab), dtype=bool, count=len(column.vocab))
        return _codes_passing(codes, passing)
    values = rows.take(column.values)
    literal_value = float(node.value) if column.type == "number" else bool(node.value)
    out: np.ndarray = op(values, literal_value)
    out &= rows.take(column.present)
    return out


def _membership(node: In, column: Column, rows: _Rows) -> np.ndarray:
    if column.type == "string":
        passing = np.full(len(column.vocab), node.negated, dtype=bool)
        passing[
            [column.code_of[v] for v in node.values if isinstance(v, str) and v in column.code_of]
        ] = not node.negated
        return _codes_passing(rows.take(column.values), passing)
    values = rows.take(column.values)
    literals = np.unique(
        np.array([float(v) if column.type == "number" else bool(v) for v in node.values], dtype=values.dtype)
    )
    out = _equal_any(values, literals) if literals.size <= _EQUALITY_CODES else np.isin(values, literals)
    if node.negated:
        np.logical_not(out, out=out)
    out &= rows.take(column.present)
    return out


def _evaluate(node: Expr, types: Mapping[str, AttrType], rows: _Rows) -> np.ndarray:
    """A new bool array (callers may change it in place) for the rows."""
    if isinstance(node, Const):
        return np.full(rows.size, node.value, dtype=bool)
    if isinstance(node, Not):
        out = _evaluate(node.operand, types, rows)
        return np.logical_not(out, out=out)
    if isinstance(node, And | Or):
        out = _evaluate(node.operands[0], types, rows)
        for operand in node.operands[1:]:
            if isinstance(node, And):
                out &= _evaluate(operand, types, rows)
            else:
                out |= _evaluate(operand, types, rows)
        return out
    column = _column(node, types, rows)
    if column is None:  # in the schema, but no item of this catalogue has it: absent everywhere
        return rows.nothing()
    if isinstance(node, Exists):
        return np.array(rows.take(column.present), dtype=bool, copy=True)
    if isinstance(node, Attr):
        return rows.take(column.values) & rows.take(column.present)
    if isinstance(node, Compare):
        return _compare(node, column, rows)
    return _membership(node, column, rows)


def _item_value(node: Attr | Exists | Compare | In, attrs: Mapping[str, object], types: Mapping[str, AttrType]) -> Any:
    value = attrs.get(node.name)
    if value is None:
        return None
    try:
        kind = type_of(value)
    except CatalogError as e:
        raise ExpressionError(f"attribute {node.name!r}: {e}", node.position) from None
    if kind != types[node.name]:
        raise ExpressionError(
            f"attribute {node.name!r} should be a {types[node.name]}, the item has {value!r}", node.position
        )
    return float(value) if kind == "number" else value  # type: ignore[arg-type]


def _matches(node: Expr, attrs: Mapping[str, object], types: Mapping[str, AttrType]) -> bool:
    if isinstance(node, Const):
        return node.value
    if isinstance(node, Not):
        return not _matches(node.operand, attrs, types)
    if isinstance(node, And):
        return all(_matches(operand, attrs, types) for operand in node.operands)
    if isinstance(node, Or):
        return any(_matches(operand, attrs, types) for operand in node.operands)
    value = _item_value(node, attrs, types)
    if isinstance(node, Exists):
        return value is not None
    if value is None:  # absent: no comparison matches
        return False
    if isinstance(node, Attr):
        return value is True
    literals = [
        float(v) if isinstance(value, float) else v for v in (node.values if isinstance(node, In) else (node.value,))
    ]
    if isinstance(node, Compare):
        return bool(_OPS[node.op](value, literals[0]))
    return (value in literals) != node.negated


# --- the compiled expression -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expression:
    """A filter checked against a schema. ``mask`` / ``mask_rows`` are vectorised; ``matches`` is the reference."""

    text: str
    attributes: frozenset[str]
    tree: Expr = field(repr=False)
    types: Mapping[str, AttrType] = field(repr=False, compare=False, hash=False)

    def mask(self, catalog: Catalog) -> np.ndarray:
        """bool per row of the catalogue (length len(catalog))."""
        return _evaluate(self.tree, self.types, _Rows(catalog))

    def mask_rows(self, catalog: Catalog, rows: np.ndarray) -> np.ndarray:
        """bool per given row; a row outside the catalogue (-1 for an id it does not hold) is False."""
        selection = _Rows(catalog, rows)
        out = _evaluate(self.tree, self.types, selection)
        if selection.valid is not None:
            out &= selection.valid
        return out

    def matches(self, attrs: Mapping[str, object]) -> bool:
        """Whether one item with these attributes passes (missing or None: absent)."""
        return _matches(self.tree, attrs, self.types)


def compile_expression(text: str, schema: Mapping[str, AttrType]) -> Expression:
    """The filter checked against the attribute types: ExpressionError for a syntax error, an unknown attribute or
    a comparison whose types do not fit, with its position."""
    tree = parse(text)
    names: set[str] = set()
    _check(tree, schema, names)
    types = MappingProxyType({name: schema[name] for name in names})
    return Expression(text, frozenset(names), tree, types)


# --- cached masks ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Cached:
    expression: Expression
    changes: int  # catalog.changes when the mask was computed
    mask: np.ndarray
    pass_fraction: float


class MaskCache:
    """Full-catalogue masks by expression text (LRU), recomputed only when ``catalog.changes`` has moved. The
    masks returned are read-only (they are shared). Texts are compiled against ``catalog.schema``."""

    def __init__(self, catalog: Catalog, size: int = 256) -> None:
        if size < 1:
            raise ValueError(f"MaskCache size must be at least 1, got {size}")
        self.catalog = catalog
        self.size = size
        self._entries: OrderedDict[str, _Cached] = OrderedDict()
        self._lock = threading.Lock()  # the dict only; masks are computed outside it

    def __len__(self) -> int:
        return len(self._entries)

    def mask(self, expression: str | Expression) -> np.ndarray:
        return self._entry(expression).mask

    def pass_fraction(self, expression: str | Expression) -> float:
        """The share of the catalogue's items that pass (0.0 for an empty catalogue)."""
        return self._entry(expression).pass_fraction

    def _entry(self, expression: str | Expression) -> _Cached:
        text = expression.text if isinstance(expression, Expression) else expression
        if not isinstance(text, str):
            raise ExpressionError(f"an expression must be a string, not {type(text).__name__}")
        changes = self.catalog.changes  # read first: a write during the computation makes the entry stale
        with self._lock:
            entry = self._entries.get(text)
            if entry is not None:
                self._entries.move_to_end(text)
        if entry is not None and entry.changes == changes:
            return entry
        if entry is not None:
            compiled = entry.expression
        elif isinstance(expression, Expression):
            compiled = expression
        else:
            compiled = compile_expression(text, self.catalog.schema)
        mask = compiled.mask(self.catalog)
        mask.flags.writeable = False
        entry = _Cached(compiled, changes, mask, float(mask.mean()) if mask.size else 0.0)
        with self._lock:
            self._entries[text] = entry
            self._entries.move_to_end(text)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return entry
