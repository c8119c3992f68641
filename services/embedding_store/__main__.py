"""Run the embedding store until SIGTERM: `python -m services.embedding_store` (env: see settings.py)."""

from __future__ import annotations

from services.embedding_store.server import create_server
from services.embedding_store.settings import Settings
from serving.stage_service import run_service

if __name__ == "__main__":
    run_service("embedding-store", Settings(), create_server)
