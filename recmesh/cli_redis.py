"""What the commands that talk to the store Redis share (`recmesh catalog ...`, `recmesh experiments ...`): the
--redis-url option, the client, the one error line and its exit status.

    add_redis_url(parser)
    client = redis_client(args.redis_url)          # ValueError for a URL that is not a Redis URL
    return fail("recmesh catalog load", redis_problem(args.redis_url, e), EXIT_REDIS)
"""

from __future__ import annotations

import argparse
import os
import sys
from urllib.parse import urlsplit

import redis

REDIS_URL_ENV = "REDIS_URL"  # the same variable as every other command and the services
DEFAULT_REDIS_URL = "redis://localhost:6379/0"
EXIT_REDIS = 1  # Redis down or holding something we did not write
EXIT_BAD_INPUT = 2


def add_redis_url(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--redis-url",
        default=os.environ.get(REDIS_URL_ENV) or DEFAULT_REDIS_URL,
        help=f"the store Redis (default: ${REDIS_URL_ENV} if set, else {DEFAULT_REDIS_URL})",
    )


def redis_client(url: str) -> redis.Redis:
    """ValueError for a URL that is not a Redis URL."""
    return redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30)


def redis_problem(url: str, error: Exception) -> str:
    parts = urlsplit(url)  # host:port/db, never the password
    where = f"{parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path or ''}"
    return f"Redis at {where}: {error} (is Redis running there? point --redis-url or ${REDIS_URL_ENV} at it)"


def fail(command: str, message: str, status: int) -> int:
    """Print the one error line of `command` (e.g. "recmesh catalog load"); return the exit status."""
    print(f"{command}: error: {' '.join(message.split())}", file=sys.stderr)
    return status
