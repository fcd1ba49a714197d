"""ASGI middleware in front of the prediction routes: bearer-token auth and a body size
limit, neither of which BentoML 1.4 has. Probes and ``/metrics`` stay open for the
cluster, and the API's description (OpenAPI) for clients to generate code from."""

from __future__ import annotations

import hmac
import json
import os
from typing import Any

from services.inference.metrics import REJECTED

OPEN = frozenset({"/livez", "/readyz", "/healthz", "/metrics", "/docs.json", "/schema.json"})


class Guard:
    def __init__(self, app: Any, token_env: str, max_bytes: int) -> None:
        self.app, self.token_env, self.max_bytes = app, token_env, max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        token = os.environ.get(self.token_env, "")
        if token:
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, f"Bearer {token}".encode()):
                await _refuse(send, 401, "auth", "missing or wrong bearer token: send "
                              "'Authorization: Bearer <token>'")
                return
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await _refuse(send, 413, "too_large", f"body over {self.max_bytes} bytes")
            return
        body, more = b"", True
        while more:  # a chunked body without a length is counted as it arrives
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                await _refuse(send, 413, "too_large", f"body over {self.max_bytes} bytes")
                return
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _refuse(send: Any, status: int, reason: str, message: str) -> None:
    REJECTED.labels(reason).inc()
    payload = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(payload)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
