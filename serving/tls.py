"""Mutual TLS between the gateway and the stage services: both ends show a certificate signed by one CA.

    files = TlsFiles.from_settings(settings)        # TLS_CERT_FILE, TLS_KEY_FILE, TLS_CA_FILE; None when unset
    server.add_secure_port(address, server_credentials(files))        # serving.server.create_server does this
    grpc.aio.secure_channel(target, channel_credentials(files), ...)  # serving.channels.make_channel does this

A server with TLS files refuses a client without a certificate from the CA (``require_client_auth``), so only
the gateway (and other recmesh processes holding a certificate) can call a stage. Unset, everything is plaintext:
the local default (``recmesh up``, the tests). On Kubernetes the three files come from one Secret mounted in
every pod (docs/security.md). TLS_SERVER_NAME is the name clients check the server certificate against when the
address they dial is not in it (a replica list resolves to IP addresses, a headless Service name to pods).

The files are read when a server or channel is made: a rotated certificate takes effect at the next rollout.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc


@dataclass(frozen=True)
class TlsFiles:
    cert: Path  # this process' certificate chain (PEM)
    key: Path  # its private key (PEM)
    ca: Path  # the CA that signs every recmesh certificate (PEM): what peers are checked against
    server_name: str = ""  # the name a client checks the server certificate for; "" = the dialled host

    @classmethod
    def from_settings(cls, settings: Any) -> TlsFiles | None:
        """The files of ``settings`` (serving.settings.CommonSettings); None when none is set; ValueError when
        only some are."""
        paths = (settings.tls_cert_file, settings.tls_key_file, settings.tls_ca_file)
        if not any(paths):
            return None
        if not all(paths):
            raise ValueError("mutual TLS needs TLS_CERT_FILE, TLS_KEY_FILE and TLS_CA_FILE together")
        cert, key, ca = (Path(p) for p in paths)
        return cls(cert, key, ca, settings.tls_server_name)

    def read(self) -> tuple[bytes, bytes, bytes]:
        return self.cert.read_bytes(), self.key.read_bytes(), self.ca.read_bytes()


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """A server's credentials: its certificate, and every client must show one signed by the CA."""
    cert, key, ca = files.read()
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)


def channel_credentials(files: TlsFiles) -> grpc.ChannelCredentials:
    """A client's credentials: the CA to check servers against, and its own certificate to show."""
    cert, key, ca = files.read()
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def channel_options(files: TlsFiles) -> list[tuple[str, Any]]:
    """``grpc.ssl_target_name_override`` when a server name is configured."""
    return [("grpc.ssl_target_name_override", files.server_name)] if files.server_name else []
