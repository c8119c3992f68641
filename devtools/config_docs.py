"""Write (or check) docs/configuration.md: every environment variable of every process, from the settings classes.

    python -m devtools.config_docs           # regenerate docs/configuration.md
    python -m devtools.config_docs --check   # exit 1 if the committed file differs from a fresh one

The settings classes (pydantic-settings, one per process) are the single source: each field's alias is the
variable, its annotation and constraints the type, its default and description the rest. A field without a
description is an error, so the reference cannot silently lose a row. The `recmesh` command's variables come from
its parser (the options whose help names a variable).
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from annotated_types import Ge, Gt, Le, Lt
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from gateway.settings import Settings as GatewaySettings
from recmesh import bundle, cli
from services.candidate_generation.settings import Settings as CandidateGenerationSettings
from services.embedding_store.settings import Settings as EmbeddingStoreSettings
from services.ranking.settings import Settings as RankingSettings
from serving.settings import CommonSettings

REPO_ROOT = Path(__file__).resolve().parent.parent
OUTPUT = Path("docs") / "configuration.md"


@dataclass(frozen=True)
class Process:
    name: str  # as in docker-compose.yml and k8s/
    module: str  # python -m <module>
    settings: type[BaseSettings]


PROCESSES = (
    Process("gateway", "gateway", GatewaySettings),
    Process("embedding-store", "services.embedding_store", EmbeddingStoreSettings),
    Process("candidate-generation", "services.candidate_generation", CandidateGenerationSettings),
    Process("ranking", "services.ranking", RankingSettings),
)


class MissingDescription(ValueError):
    """A settings field without a description: the reference would have an empty row."""


def variable(cls: type[BaseSettings], name: str, field: FieldInfo) -> str:
    if not isinstance(field.validation_alias, str):
        raise ValueError(f"{cls.__module__}.{cls.__name__}.{name}: expected one environment variable as its alias")
    return field.validation_alias


def type_of(field: FieldInfo) -> str:
    """`int`, `float >= 0`, `dict[str, float]`: the annotation and its numeric bounds."""
    annotation = field.annotation
    text = {Path: "path", bool: "bool (true/false)"}.get(annotation, getattr(annotation, "__name__", None))  # type: ignore[arg-type]
    if text is None or "[" in repr(annotation):
        text = re.sub(r"\b(typing|builtins|pathlib)\.", "", repr(annotation))
    bounds = {Ge: ("ge", ">="), Gt: ("gt", ">"), Le: ("le", "<="), Lt: ("lt", "<")}
    for constraint in field.metadata:
        for kind, (attribute, sign) in bounds.items():
            if isinstance(constraint, kind):
                text += f", {sign} {getattr(constraint, attribute)}"
    return text


def default_of(field: FieldInfo) -> str:
    """The default as one would write it in the environment."""
    value: Any = field.default
    if value is PydanticUndefined and field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, dict):
        value = ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in value.items())
    elif isinstance(value, list | tuple):
        value = ",".join(map(str, value))
    return f"`{value}`" if str(value) != "" else "empty"


def cell(text: str) -> str:
    """One table cell: one line, no column break, no <word> that Markdown would take for an HTML tag."""
    text = " ".join(text.split()).replace("|", "\\|")
    return re.sub(r"<(?=[A-Za-z/!])", "&lt;", text)


def table(cls: type[BaseSettings], names: list[str]) -> list[str]:
    rows = ["| variable | type | default | description |", "| --- | --- | --- | --- |"]
    for name in names:
        field = cls.model_fields[name]
        if not (field.description or "").strip():
            raise MissingDescription(
                f"{cls.__module__}.{cls.__name__}.{name}: add description=... to its Field (docs/configuration.md "
                "is generated from it)"
            )
        rows.append(
            f"| `{variable(cls, name, field)}` | {cell(type_of(field))} | {cell(default_of(field))} "
            f"| {cell(field.description or '')} |"
        )
    return rows


def cli_variables() -> dict[str, list[str]]:
    """{variable: ["recmesh train --out", ...]} for the `recmesh` options that default to a variable."""
    found: dict[str, list[str]] = {}
    for parser in cli.parsers(cli.build_parser()):
        for action in parser._actions:
            for name in re.findall(r"\$([A-Z][A-Z0-9_]+)", action.help or ""):
                found.setdefault(name, []).append(f"`{parser.prog} {'/'.join(action.option_strings)}`")
    return dict(sorted(found.items()))


def render() -> str:
    common = list(CommonSettings.model_fields)
    lines = [
        "<!-- Generated by `python -m devtools.config_docs` from the settings classes; edit those, not this file. -->",
        "# Configuration reference",
        "",
        "Every process reads its configuration from the environment, once, at start (one pydantic-settings object",
        "per process: `serving/settings.py` and each process' `settings.py`). Names are case-insensitive; a value",
        "that does not parse or breaks a bound stops the process at start with a message naming the variable.",
        "Tracing is configured by the standard `OTEL_*` variables: [tracing.md](tracing.md).",
        "",
        "## Every process",
        "",
        "The gateway and the three services all read these (`serving/settings.py`, `CommonSettings`).",
        "",
        *table(CommonSettings, common),
    ]
    for process in PROCESSES:
        own = [name for name in process.settings.model_fields if name not in common]
        lines += [
            "",
            f"## {process.name}",
            "",
            f"`python -m {process.module}` (`{process.settings.__module__}`): the variables of",
            "[every process](#every-process), and:",
            "",
            *table(process.settings, own),
        ]
    lines += [
        "",
        "## The `recmesh` command",
        "",
        "Options that configure the same thing as a service take their default from the service's variable, so a",
        "Job or a container runs `recmesh train` / `recmesh publish` with the same environment and no shell.",
        "A flag given on the command line wins. `recmesh --help` and `recmesh <command> --help` list every option.",
        "",
        "| variable | default of |",
        "| --- | --- |",
        *(f"| `{name}` | {', '.join(options)} |" for name, options in cli_variables().items()),
        f"| `{cli.DEBUG_ENV}` | `1`: on an error, print the traceback too (same as `recmesh --debug`) |",
        f"| `{bundle.SIGNING_KEY_ENV}` | read by every process that writes or loads bundles (`recmesh train`, `recmesh "
        "publish`, the three services): set, manifests are signed (HMAC-SHA256) and every load refuses a missing or "
        "bad signature; unset, bundles are neither signed nor checked (docs/security.md) |",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.config_docs", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if the committed file is stale")
    args = parser.parse_args(argv)
    try:
        text = render()
    except ValueError as e:
        print(f"config_docs: error: {e}", file=sys.stderr)
        return 1
    path = REPO_ROOT / OUTPUT
    if args.check:
        current = path.read_text() if path.is_file() else ""
        if current != text:
            print(f"{OUTPUT} is out of date: run `python -m devtools.config_docs`", file=sys.stderr)
            return 1
        print(f"{OUTPUT} is up to date")
        return 0
    path.write_text(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
