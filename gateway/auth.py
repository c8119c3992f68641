"""Who may call the gateway: API keys with scopes, hashed at rest, rotated without a restart, rate limited per key.

    auth = Authenticator.from_settings(settings)       # AUTH_KEYS_FILE, or AUTH=disabled (docs/security.md)
    caller = auth.check(credential_of(authorization, x_api_key), "recommend")   # the one check, both faces
    with bound(caller): ...                            # the use cases may then ask require("history:read")

A key is ``rk_<id>_<secret>``: the id names the key in logs and errors, the secret (32 random bytes, url-safe
base64) is never logged. The keys file (JSON, mounted from a Secret) holds each key's id, the SHA-256 of the
whole key, its scopes, its rate limit and an optional expiry::

    {"keys": [{"id": "shop", "sha256": "<hex>", "scopes": ["recommend", "events:write"],
               "rate_limit": 200, "burst": 400, "expires": "2027-01-01T00:00:00Z"}]}

A fast hash is enough: the secret has 256 bits of entropy, so the hash cannot be brute-forced whatever its speed
(slow hashes like bcrypt protect low-entropy passwords, and would cost ~50 ms per request here); digests are
compared with hmac.compare_digest. The file is re-read when its mtime or size changes (checked at most once per
RELOAD_CHECK_S), so a rotation needs no restart; a file that does not parse is refused and the keys in use kept.
``python -m gateway.auth new <id> <scope>...`` prints a new key and its file entry; ``dev-file <path>`` writes a
keys file with one all-scope dev key (local use).

Failures: no key or a bad one -> Unauthenticated (401 / UNAUTHENTICATED); a key without the scope ->
PermissionDenied (403 / PERMISSION_DENIED, naming the scope); over its rate -> ResourceExhausted (429 with
Retry-After / RESOURCE_EXHAUSTED with RetryInfo).
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from serving.errors import PermissionDenied, ResourceExhausted, Unauthenticated

log = logging.getLogger(__name__)

SCOPES = frozenset({"recommend", "history:read", "events:write", "stages", "catalog:read", "catalog:write", "admin"})
KEY_PREFIX = "rk_"
KEY_ID = re.compile(r"[a-z0-9-]{1,40}")  # no "_": the key's second "_" ends its id
RELOAD_CHECK_S = 1.0  # how often a request may stat the keys file (one stat() per second, not per request)


class AuthConfigError(ValueError):
    """The gateway cannot authenticate anyone as configured (no keys file, or one that does not parse)."""


@dataclass(frozen=True)
class Caller:
    """Who is calling: the key's id (what logs and metrics may name) and its scopes."""

    key_id: str
    scopes: frozenset[str]


ANONYMOUS = Caller("auth-disabled", SCOPES)  # AUTH=disabled: every call may do everything
_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("recmesh_caller", default=None)


class bound:  # noqa: N801 (used as a function: `with bound(caller):`)
    """``caller`` is the current request's caller inside the block (what :func:`require` checks). A class, not
    a @contextmanager: this runs on every request, and a generator costs a microsecond more."""

    __slots__ = ("caller", "token")

    def __init__(self, caller: Caller) -> None:
        self.caller = caller

    def __enter__(self) -> None:
        self.token = _caller.set(self.caller)

    def __exit__(self, *exc: object) -> None:
        _caller.reset(self.token)


def require(scope: str) -> None:
    """PermissionDenied unless the current request's caller holds ``scope``. A request that went through no
    authentication (no caller bound) holds nothing."""
    caller = _caller.get()
    if caller is None or scope not in caller.scopes:
        raise PermissionDenied(denied_message(caller.key_id if caller else "none", scope))


def denied_message(key_id: str, scope: str) -> str:
    return f"the API key {key_id!r} lacks the scope {scope!r} this call needs"


# ----------------------------------------------------------------------------------------------- key file
def digest(key: str) -> str:
    """The hex SHA-256 the keys file stores for ``key``."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(key_id: str) -> str:
    """A fresh key ``rk_<key_id>_<43 url-safe characters>``."""
    if not KEY_ID.fullmatch(key_id):
        raise ValueError(f"a key id is 1-40 of a-z, 0-9 and '-', got {key_id!r}")
    return f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def key_entry(key: str, scopes: list[str], rate_limit: float = 0, burst: float = 0) -> dict[str, Any]:
    """The keys file's entry for ``key`` (which it does not contain: only its digest)."""
    return {"id": key_id_of(key), "sha256": digest(key), "scopes": scopes, "rate_limit": rate_limit, "burst": burst}


def key_id_of(key: str) -> str | None:
    """The id part of ``rk_<id>_<secret>``; None when the string does not have that shape."""
    if not key.startswith(KEY_PREFIX):
        return None
    key_id, sep, secret = key[len(KEY_PREFIX) :].partition("_")
    return key_id if sep and secret and KEY_ID.fullmatch(key_id) else None


@dataclass(frozen=True)
class ApiKey:
    id: str
    sha256: bytes  # the hex digest's ASCII bytes, compared as they are
    scopes: frozenset[str]
    rate_limit: float = 0.0  # requests per second; 0 = no limit
    burst: float = 0.0  # bucket size; 0 = one second's worth (at least 1)
    expires: float | None = None  # Unix time


def parse_keys(text: str, where: str = "keys file") -> dict[str, ApiKey]:
    """The keys of a keys file's text, by id; ValueError naming the entry at fault."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not JSON: {e}") from None
    entries = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f'{where}: expected {{"keys": [...]}}')
    keys: dict[str, ApiKey] = {}
    for n, entry in enumerate(entries):
        try:
            key = _parse_entry(entry)
        except (TypeError, ValueError, KeyError) as e:
            raise ValueError(f"{where}: keys[{n}]: {e}") from None
        if key.id in keys:
            raise ValueError(f"{where}: keys[{n}]: id {key.id!r} appears twice")
        keys[key.id] = key
    return keys


def _parse_entry(entry: dict[str, Any]) -> ApiKey:
    key_id, sha, scopes = str(entry["id"]), str(entry["sha256"]).lower(), entry["scopes"]
    if not KEY_ID.fullmatch(key_id):
        raise ValueError(f"id {key_id!r}: 1-40 of a-z, 0-9 and '-'")
    if not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise ValueError("sha256: 64 hex digits expected")
    if not isinstance(scopes, list) or not set(scopes) <= SCOPES:
        raise ValueError(f"scopes: a list of {', '.join(sorted(SCOPES))}")
    rate, burst = float(entry.get("rate_limit", 0)), float(entry.get("burst", 0))
    if rate < 0 or burst < 0:
        raise ValueError("rate_limit and burst are >= 0")
    expires = entry.get("expires")
    when = datetime.fromisoformat(expires.replace("Z", "+00:00")).timestamp() if expires else None
    return ApiKey(key_id, sha.encode(), frozenset(scopes), rate, burst, when)


class KeyFile:
    """The keys of a file, re-read when it changes (mtime or size; checked at most every RELOAD_CHECK_S).

    A Kubernetes Secret volume swaps a symlink on update: stat() follows it, so the change is seen."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp = self._stat()
        self.keys = parse_keys(path.read_text(), str(path))  # at start a bad file stops the process
        self._next_check = time.monotonic() + RELOAD_CHECK_S

    def _stat(self) -> tuple[int, int]:
        st = os.stat(self.path)
        return st.st_mtime_ns, st.st_size

    def current(self, now: float) -> dict[str, ApiKey]:
        if now >= self._next_check:
            self._next_check = now + RELOAD_CHECK_S
            self._reload_if_changed()
        return self.keys

    def _reload_if_changed(self) -> None:
        try:
            stamp = self._stat()
            if stamp == self._stamp:
                return
            keys = parse_keys(self.path.read_text(), str(self.path))
        except (OSError, ValueError) as e:  # half-written or removed: keep serving with the keys in use
            log.warning("keys file not reloaded, keeping the %d keys in use: %s", len(self.keys), e)
            return
        self._stamp, self.keys = stamp, keys
        log.info("keys file reloaded: %d keys", len(keys), extra={"key_ids": sorted(keys)})


# --------------------------------------------------------------------------------------------- rate limits
@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class RateLimits:
    """A token bucket per key id, in this process (each gateway replica limits on its own: docs/security.md)."""

    buckets: dict[str, _Bucket] = field(default_factory=dict)

    def take(self, key: ApiKey, now: float) -> None:
        if key.rate_limit <= 0:
            return
        size = key.burst or max(1.0, key.rate_limit)
        bucket = self.buckets.get(key.id)
        if bucket is None:
            bucket = self.buckets[key.id] = _Bucket(size, now)
        bucket.tokens = min(size, bucket.tokens + (now - bucket.at) * key.rate_limit)
        bucket.at = now
        if bucket.tokens < 1:
            wait = (1 - bucket.tokens) / key.rate_limit
            raise ResourceExhausted(f"the API key {key.id!r} is over its rate limit of {key.rate_limit:g}/s", wait)
        bucket.tokens -= 1


# ------------------------------------------------------------------------------------------------ the check
def credential_of(authorization: str | None, api_key: str | None) -> str | None:
    """The key a request presents: ``Authorization: Bearer <key>``, else ``x-api-key: <key>``."""
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return api_key.strip() if api_key else None


MISSING = "missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'"
INVALID = "invalid API key"  # unknown id, wrong secret or expired: a caller is not told which
_DUMMY = digest("rk_none_x").encode()  # compared against when the id is unknown: the same work either way


class Authenticator:
    """The one check of both faces (REST middleware, gRPC interceptor). ``keys`` None: authentication is off."""

    def __init__(self, keys: KeyFile | None) -> None:
        self.keys = keys
        self.limits = RateLimits()

    @classmethod
    def from_settings(cls, settings: Any) -> Authenticator:
        """From AUTH and AUTH_KEYS_FILE. A gateway with neither a keys file nor AUTH=disabled does not start."""
        if settings.auth == "disabled":
            log.warning("AUTH=disabled: every caller may do everything (local use and tests only)")
            return cls(None)
        if settings.auth_keys_file is None:
            raise AuthConfigError(
                "AUTH_KEYS_FILE is not set: the gateway needs API keys (docs/security.md), or AUTH=disabled "
                "to run without them (local use only)"
            )
        try:
            return cls(KeyFile(Path(settings.auth_keys_file)))
        except (OSError, ValueError) as e:
            raise AuthConfigError(f"AUTH_KEYS_FILE: {e}") from None

    @property
    def enabled(self) -> bool:
        return self.keys is not None

    def check(self, credential: str | None, scope: str | None) -> Caller:
        """The caller presenting ``credential``, allowed ``scope`` (None: any valid key) and within its rate."""
        if self.keys is None:
            return ANONYMOUS
        if not credential:
            raise Unauthenticated(MISSING)
        now = time.time()
        key = self.keys.current(time.monotonic()).get(key_id_of(credential) or "")
        given = digest(credential).encode()
        if not hmac.compare_digest(given, key.sha256 if key else _DUMMY) or key is None:
            raise Unauthenticated(INVALID)
        if key.expires is not None and now >= key.expires:
            raise Unauthenticated(INVALID)
        if scope is not None and scope not in key.scopes:
            raise PermissionDenied(denied_message(key.id, scope))
        self.limits.take(key, time.monotonic())
        return Caller(key.id, key.scopes)


def write_dev_keys(path: Path) -> str:
    """A keys file at ``path`` holding one new key with every scope (``rk_dev_...``), readable by its owner only;
    returns the key. What ``recmesh up`` and docker compose's one-shot ``train`` run: local use only."""
    key = new_key("dev")
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(path.name + ".new")
    staged.touch(mode=0o600)
    staged.write_text(json.dumps({"keys": [key_entry(key, sorted(SCOPES))]}))
    staged.replace(path)
    return key


USAGE = (
    "usage: python -m gateway.auth new <id> [scope ...]   a key on stdout, its keys-file entry on stderr\n"
    "       python -m gateway.auth dev-file <path>         a keys file with one all-scope dev key, unless one exists\n"
    f"scopes: {', '.join(sorted(SCOPES))}"
)


def main(argv: list[str]) -> int:
    """The ``python -m gateway.auth`` command (see USAGE)."""
    if len(argv) == 2 and argv[0] == "dev-file":
        path = Path(argv[1])
        if path.exists():
            print(f"{path} exists: kept (delete it for a new dev key)")
        else:
            print(f"dev API key (every scope; keys file {path}): {write_dev_keys(path)}")
        return 0
    if len(argv) < 2 or argv[0] != "new":
        print(USAGE, file=sys.stderr)
        return 2
    scopes = argv[2:] or sorted(SCOPES - {"admin"})
    if not set(scopes) <= SCOPES:
        print(f"unknown scope in {scopes}; known: {', '.join(sorted(SCOPES))}", file=sys.stderr)
        return 2
    try:
        key = new_key(argv[1])
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    print(key)
    print(json.dumps(key_entry(key, scopes)), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
