"""Python's garbage collector set for a long-running server: start-up's objects left out of every collection,
and young collections less often.

    tune_for_serving()   # once the server is up: models, tables and modules loaded

A request allocates many short-lived objects (protobuf messages, dicts, futures); with the default threshold the
collector runs a young-generation pass every 700 allocations, and each pass walks survivors again. Freezing what
start-up allocated moves it out of the collector's sight for good (it lives as long as the process anyway), and a
higher threshold lets most request garbage die by reference counting before a pass ever sees it.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000  # allocations between young-generation passes (CPython's default: 700)


def tune_for_serving() -> None:
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
