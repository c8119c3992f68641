"""The optional dependencies (pyproject.toml extras) and the one-line error when one is missing.

`pip install .` (the serving image) carries what serving needs; training (`train`: gensim), the ANN backends other
than ScaNN and exact (`ann`: faiss, hnswlib) and plots (`plots`) are extras. Code that needs one imports it like:

    try:
        from gensim.models import Word2Vec
    except ModuleNotFoundError as e:
        raise missing_extra(e, "train", "training item vectors") from None
"""

from __future__ import annotations


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message says which extra brings it."""


def missing_extra(error: ModuleNotFoundError, extra: str, what: str) -> MissingExtra:
    """The error to raise instead of ``error``: ``what`` needs ``error.name``; ``pip install 'recmesh[extra]'``."""
    library = (error.name or "a library").split(".")[0]
    return MissingExtra(
        f"{what} needs {library}, which is not installed here: pip install 'recmesh[{extra}]'", name=library
    )
