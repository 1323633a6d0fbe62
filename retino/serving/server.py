"""The served model over HTTP with a bound on each request's body.

MLflow's scoring app (what `mlflow models serve` runs) reads a whole request body into memory
before anything looks at it, with no limit: one client can send gigabytes. Here the same app is
wrapped by BodyLimit, which refuses a body above the limit with 413 at once (a declared
Content-Length) or as soon as the bytes read pass it (a chunked body), holding none of it, so a
request costs at most the limit in memory; each photograph in it is then bounded by
max_megapixels before it is decoded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_MAX_REQUEST_MB = 50.0  # about 30 full-size fundus JPEGs in base64 per request
TOO_LARGE, GONE = object(), object()  # what _read_bounded found instead of a body


class BodyLimit:
    """ASGI middleware: HTTP requests whose body passes max_bytes are answered 413 with a JSON
    error naming the limit and the way to raise it; smaller ones reach the app unchanged."""

    def __init__(self, app: App, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._drain(receive)
            await self._refuse(send, declared)
            return
        body, ended = await self._read_bounded(receive)
        if body is TOO_LARGE:
            if not ended:
                await self._drain(receive)
            await self._refuse(send, None)
        elif body is not GONE:
            await self.app(scope, _replay(body, receive), send)

    async def _read_bounded(self, receive: Receive) -> tuple[bytes | object, bool]:
        """(the whole body, True); (TOO_LARGE, whether the body ended) as soon as it passes
        the limit (what was read is let go); (GONE, True) when the client left first."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return GONE, True
            chunk = message.get("body", b"")
            ended = not message.get("more_body", False)
            size += len(chunk)
            if size > self.max_bytes:
                return TOO_LARGE, ended
            chunks.append(chunk)
            if ended:
                return b"".join(chunks), True

    async def _drain(self, receive: Receive) -> None:
        """Read and drop what the client still sends, up to another limit's worth: a client
        that is still sending when the connection closes sees it reset, not the 413."""
        dropped = 0
        while dropped <= self.max_bytes:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            dropped += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def _refuse(self, send: Send, declared: int | None) -> None:
        size = f"{declared / 1e6:.1f} MB" if declared is not None else "larger"
        error = {"error_code": "REQUEST_TOO_LARGE",
                 "message": f"the request body is {size}, above the server's limit of "
                            f"{self.max_bytes / 1e6:g} MB: send fewer photographs per request, "
                            "or start the server with a larger --max-request-mb"}
        content = json.dumps(error).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(content)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": content})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _replay(body: bytes, live: Receive) -> Receive:
    """A receive that gives the app the body already read, then the connection's own messages
    (its disconnect, when the client goes away)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await live()

    return receive


def scoring_app(model_uri: str, max_request_mb: float = DEFAULT_MAX_REQUEST_MB,
                folder: str | None = None) -> App:
    """MLflow's scoring app for the model at model_uri (its /invocations, /ping, /health and
    /version, as `mlflow models serve` answers them), behind BodyLimit. A model in a store
    (runs:/, models:/) is downloaded into folder, the caller's to remove (None: into a temporary
    folder MLflow never removes, a copy of the weights per server started); a model folder is
    loaded where it lies."""
    from mlflow.pyfunc import load_model, scoring_server  # the web stack: only to serve

    config = os.environ.get(scoring_server.SERVING_MODEL_CONFIG)  # as MLflow's server reads it
    local = Path(model_uri).expanduser().is_dir()
    model = load_model(model_uri, dst_path=None if local else folder,
                       **({"model_config": json.loads(config)} if config else {}))
    return BodyLimit(scoring_server.init(model), int(max_request_mb * 1e6))
