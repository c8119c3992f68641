"""Run the ranking service: `python -m services.ranking` (env: see settings.py)."""

from __future__ import annotations

import uvloop

from services.ranking.server import create_server
from services.ranking.settings import Settings
from serving.logs import configure_logging
from serving.metrics import start_metrics_server
from serving.server import serve_until_signal


async def main() -> None:
    settings = Settings()
    configure_logging("ranking", settings.log_level)
    start_metrics_server(settings.metrics_port)
    server, _, health, _ = await create_server(settings)
    await serve_until_signal(server, health)


if __name__ == "__main__":
    uvloop.run(main())
