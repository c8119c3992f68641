"""The `recmesh` console script: the library's commands (recmesh/cli.py) plus `up`, the local stack."""

from __future__ import annotations

import sys

from devtools import up
from recmesh import cli


def main(argv: list[str] | None = None) -> int:
    return cli.main(argv, extensions=(up.add_command,))


if __name__ == "__main__":
    sys.exit(main())
