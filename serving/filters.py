"""Filter expressions as the API checks them: the caller's text, its problems as INVALID_ARGUMENT naming the field
and the column. One place for the gateway (before any hop) and candidate generation (its own input).

    check_syntax('price <', "options.filter")           # InvalidArgument: "options.filter: syntax error at column 8..."
    expression = compile_filter(text, catalog, "filter")  # also unknown attributes and wrong types
"""

from __future__ import annotations

from recmesh.catalog.expressions import MAX_EXPRESSION_CHARS, Expression, ExpressionError, compile_expression, parse
from recmesh.catalog.table import Catalog
from serving.errors import InvalidArgument


def check_syntax(text: str, field: str) -> None:
    """Length and syntax, needing no catalogue."""
    if len(text) > MAX_EXPRESSION_CHARS:
        raise InvalidArgument(f"{field} is longer than {MAX_EXPRESSION_CHARS} characters", field=field)
    try:
        parse(text)
    except ExpressionError as e:
        raise InvalidArgument(f"{field}: {e}", field=field) from e


def compile_filter(text: str, catalog: Catalog, field: str) -> Expression:
    """The expression compiled against the catalogue's attributes."""
    try:
        return compile_expression(text, catalog.schema)
    except ExpressionError as e:
        raise InvalidArgument(f"{field}: {e}", field=field) from e


def warm_up() -> None:
    """Build the parser now (lark builds its LALR tables on first use: tens of ms the first filtered request would
    otherwise pay)."""
    parse('warm_up == "x" and not exists(y)')
