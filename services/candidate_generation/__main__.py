"""Run the candidate-generation service until SIGTERM: `python -m services.candidate_generation` (env: settings.py)."""

from __future__ import annotations

from services.candidate_generation.server import create_server
from services.candidate_generation.settings import Settings
from serving.stage_service import run_service

if __name__ == "__main__":
    run_service("candidate-generation", Settings(), create_server)
