"""ASGI middleware that guards every route: the bearer token, the request size limit, and the
same-origin check that keeps a web page elsewhere from driving a loopback server through the
visitor's browser (what ComfyUI's origin-only middleware does)."""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def _refuse(scope: Scope, send: Send, status: int, message: str) -> None:
    """Answer an HTTP request with `{"errors": [...]}`, or close a WebSocket before accepting it."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 4000 + status})
        return
    body = json.dumps({"errors": [{"file": None, "line": None, "node": None, "field": None,
                                   "message": message}]}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _public(scope: Scope) -> bool:
    """The page's own files (`GET /`, `/static/...`) need no token: they hold no data, and a browser
    cannot add one to `<script type="module">` imports (docs/server_api.md, Authentication)."""
    path = scope.get("path", "")
    return scope["type"] == "http" and scope.get("method") in ("GET", "HEAD") and (
        path == "/" or path.startswith("/static/"))


class Guards:
    """Token, size and origin checks in front of `app`."""

    def __init__(self, app: ASGIApp, token: str | None, max_body: int) -> None:
        self.app = app
        self.token = token
        self.max_body = max_body

    def _authorised(self, scope: Scope) -> bool:
        if self.token is None:
            return True
        given = None
        auth = _header(scope, b"authorization")
        if auth and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if given is None:
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            given = (query.get("token") or [None])[0]
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def _same_origin(self, scope: Scope) -> bool:
        origin = _header(scope, b"origin")
        host = _header(scope, b"host")
        if not origin or not host or origin == "null":
            return origin != "null"
        return urlsplit(origin).netloc.lower() == host.lower()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if not self._same_origin(scope):
            await _refuse(scope, send, 403, "cross-origin request refused (the Origin is not this server)")
            return
        if not self._authorised(scope) and not _public(scope):
            await _refuse(scope, send, 401, "a valid token is needed: 'Authorization: Bearer T' or ?token=T")
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await _refuse(scope, send, 413, f"request body over the limit ({self.max_body} bytes)")
            return
        # read the body here, up to the limit, then hand it on whole: a handler never sees a body that
        # is too large, however it was sent (with a Content-Length or in chunks)
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_body:
                await _refuse(scope, send, 413, f"request body over the limit ({self.max_body} bytes)")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
