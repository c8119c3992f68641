"""gRPC client channels: one target naming several replicas, round_robin across them, retries on UNAVAILABLE.

Usage::

    channel = make_channel("10.0.0.5:50051,10.0.0.6:50051")   # round_robin over both replicas
    channel = make_channel("dns:///ranking.default.svc:50051")  # a URI is passed to gRPC as it is
"""

from __future__ import annotations

import ipaddress
import json
import socket
from typing import Any

import grpc
import grpc.aio

from serving.tls import TlsFiles, channel_credentials
from serving.tls import channel_options as tls_channel_options
from serving.tracing import client_interceptors

MB = 1024 * 1024

# Retries for UNAVAILABLE only (the request never reached a handler, or the replica went away): every
# recmesh RPC is idempotent or safe to repeat, and a short backoff fits inside a 200 ms budget.
SERVICE_CONFIG: dict[str, Any] = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [
        {
            "name": [{}],  # every method of every service
            "retryPolicy": {
                "maxAttempts": 3,
                "initialBackoff": "0.005s",
                "maxBackoff": "0.05s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
}

# Target schemes gRPC resolves itself; such targets are passed through untouched.
_URI_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:", "xds:")


def message_options(max_message_mb: int) -> list[tuple[str, Any]]:
    """The message size limits, the same at both ends of a call."""
    return [
        ("grpc.max_receive_message_length", max_message_mb * MB),
        ("grpc.max_send_message_length", max_message_mb * MB),
    ]


# Reconnecting to a stage that went away: gRPC's default backoff starts at 1 s and grows 1.6x to 120 s, so after a
# 20 s outage the next attempt could come ~7 s after the stage is back. Capped at 250 ms, an attempt comes at most
# a quarter second after the stage listens again (cheap: one TCP connect per address per 250 ms during an outage).
# The 1 s minimum is also the connect timeout of an attempt, plenty on a cluster network (docs/reliability.md).
RECONNECT_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 1000),
    ("grpc.max_reconnect_backoff_ms", 250),
]


def channel_options(max_message_mb: int = 4) -> list[tuple[str, Any]]:
    """Client channel options: message size limits, retries on UNAVAILABLE, round_robin balancing, fast
    reconnects."""
    return [
        *message_options(max_message_mb),
        ("grpc.enable_retries", 1),
        ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
        *RECONNECT_OPTIONS,
    ]


def _split_host_port(address: str) -> tuple[str, str]:
    if address.startswith("["):  # [ipv6]:port
        host, sep, port = address[1:].partition("]:")
    else:
        host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected host:port, got {address!r}")
    return host, port


def _resolve(host: str, port: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    if host == "localhost":
        return [ipaddress.IPv4Address("127.0.0.1")]
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    infos = socket.getaddrinfo(host, int(port), socket.AF_INET, socket.SOCK_STREAM)
    if not infos:
        raise ValueError(f"cannot resolve {host!r}")
    return [ipaddress.IPv4Address(info[4][0]) for info in infos]


def resolve_target(target: str) -> str:
    """The gRPC target for ``target``: a URI (``dns:///name:port``) or one ``host:port`` is returned as
    is; a comma-separated ``h1:p1,h2:p2`` list becomes ``ipv4:a1:p1,a2:p2`` (or ``ipv6:[a1]:p1,...``),
    host names resolved once with getaddrinfo ("localhost" -> 127.0.0.1) and every address kept.
    """
    target = target.strip()
    if not target:
        raise ValueError("empty gRPC target")
    if "://" in target or target.startswith(_URI_SCHEMES) or "," not in target:
        return target
    v4: list[str] = []
    v6: list[str] = []
    for address in (a.strip() for a in target.split(",")):
        if not address:
            continue
        host, port = _split_host_port(address)
        for ip in _resolve(host, port):
            entry = f"{ip}:{port}" if ip.version == 4 else f"[{ip}]:{port}"
            bucket = v4 if ip.version == 4 else v6
            if entry not in bucket:
                bucket.append(entry)
    if v4 and v6:
        raise ValueError(f"cannot mix IPv4 and IPv6 addresses in one target: {target!r}")
    return f"ipv4:{','.join(v4)}" if v4 else f"ipv6:{','.join(v6)}"


def make_channel(target: str, max_message_mb: int = 4, tls: TlsFiles | None = None) -> grpc.aio.Channel:
    """An asyncio channel to ``target`` (see :func:`resolve_target`), round_robin across replicas: plaintext, or
    mutual TLS with ``tls`` (serving.tls: the server checked against the CA, this process' certificate shown).

    Resolving a comma-separated list of host names blocks (getaddrinfo): call this at startup. With tracing on
    (serving.tracing), every call on the channel has a client span and sends its traceparent.
    """
    resolved, options, interceptors = resolve_target(target), channel_options(max_message_mb), client_interceptors()
    if tls is None:
        return grpc.aio.insecure_channel(resolved, options=options, interceptors=interceptors)
    options += tls_channel_options(tls)
    return grpc.aio.secure_channel(resolved, channel_credentials(tls), options=options, interceptors=interceptors)
