"""python -m services.embedding_store: serve EmbeddingStoreService until SIGTERM (env: see settings.py)."""

from __future__ import annotations

import uvloop

from services.embedding_store.server import create_server
from services.embedding_store.settings import Settings
from serving.logs import configure_logging
from serving.metrics import start_metrics_server
from serving.server import serve_until_signal


async def main(settings: Settings) -> None:
    server, _, health, store = await create_server(settings)
    try:
        await serve_until_signal(server, health)
    finally:
        await store.aclose()


if __name__ == "__main__":
    settings = Settings()
    configure_logging("embedding-store", settings.log_level)
    start_metrics_server(settings.metrics_port)
    uvloop.run(main(settings))
