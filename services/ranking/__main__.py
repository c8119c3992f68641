"""Run the ranking service until SIGTERM: `python -m services.ranking` (env: see settings.py)."""

from __future__ import annotations

from services.ranking.server import create_server
from services.ranking.settings import Settings
from serving.stage_service import run_service

if __name__ == "__main__":
    run_service("ranking", Settings(), create_server)
