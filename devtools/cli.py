"""The `recmesh` console script: the library's commands (recmesh/cli.py) plus `up`, the local stack.

Errors are reported as recmesh/cli.py describes (one line, exit 1; usage errors exit 2), including the ones
raised before a command runs (building the parser, an extension adding its subcommands)::

    recmesh up --models-dir models     # the whole stack locally
    recmesh train --help
"""

from __future__ import annotations

import argparse
import sys

from devtools import up
from recmesh import cli


def main(argv: list[str] | None = None) -> int:
    try:
        return cli.main(argv, extensions=(up.add_command,))
    except KeyboardInterrupt:
        print("\nrecmesh: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # raised before a command ran: cli.main reports the ones raised by a command
        return cli.fail("", e, argparse.Namespace(), cli.debug_requested(argv))


if __name__ == "__main__":
    sys.exit(main())
