"""The REST face's authentication: the scope each route needs, checked before the body is read.

    app.add_middleware(AuthMiddleware, auth=Authenticator.from_settings(settings))   # gateway/app.py

Plain ASGI, inside GatewayMiddleware (so a refusal has a request id and is counted) and outside the fast path
and FastAPI (so every route is covered, the fast one included). /healthz, /readyz, /metrics and the OpenAPI
document stay open (docs/security.md says why); any other /v1 path needs a valid key, so an unknown route tells
an anonymous caller nothing. A refusal is 401 with ``WWW-Authenticate: Bearer`` (no key, a bad key), 403 naming
the missing scope, or 429 with Retry-After (the key's rate limit).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway import auth
from gateway.rest_errors import recmesh_error_response
from serving.errors import RecmeshError, Unauthenticated

ROUTE_SCOPES = {
    "/v1/recommend": "recommend",  # history:read as well when it names a user_id (gateway/app.py)
    "/v1/events": "events:write",
    "/v1/embeddings": "stages",
    "/v1/candidates": "stages",
    "/v1/rank": "stages",
    "/v1/items": "catalog:write",  # POST: a batch upsert; POST /v1/items:delete: a batch delete
    "/v1/items:delete": "catalog:write",
}
ITEMS_PREFIX = "/v1/items/"  # /v1/items/{id}: catalog:read to GET, catalog:write to change; .../similar: stages
PROTECTED_PREFIX = "/v1/"  # any other path under it: a valid key, no scope
CHALLENGE = (b"www-authenticate", b'Bearer realm="recmesh"')


def scope_of(path: str, method: str = "GET") -> tuple[bool, str | None]:
    """(whether ``path`` needs a key, the scope ``method`` on it needs)."""
    scope = ROUTE_SCOPES.get(path)
    if scope is not None:
        return True, scope
    if path.startswith(ITEMS_PREFIX):
        if path.endswith("/similar"):
            return True, "stages"
        return True, "catalog:read" if method in ("GET", "HEAD") else "catalog:write"
    return path.startswith(PROTECTED_PREFIX), None


class AuthMiddleware:
    def __init__(self, app: ASGIApp, auth: auth.Authenticator) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        protected, needed = scope_of(scope["path"], scope["method"])
        if not protected:
            await self.app(scope, receive, send)
            return
        authorization = api_key = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"x-api-key":
                api_key = value.decode("latin-1")
        try:
            caller = self.auth.check(auth.credential_of(authorization, api_key), needed)
        except RecmeshError as e:
            response = recmesh_error_response(e)
            if isinstance(e, Unauthenticated):
                response.raw_headers.append(CHALLENGE)
            await response(scope, receive, send)
            return
        with auth.bound(caller):
            await self.app(scope, receive, send)
