"""A Starlette app that reports exactly what it received, for the integration tests
(tests/common/apps.rs) that run it under real servers (uvicorn, hypercorn) to see how
they read request targets the proxy has already judged.

  .venv/bin/uvicorn app:app --host 127.0.0.1 --port PORT --no-access-log
  .venv/bin/hypercorn app:app --bind 127.0.0.1:PORT

Every HTTP request gets 200 and JSON: path, raw_path (latin-1), route (the name of the
Starlette route matched), method, headers (as received, names lower-case),
http_version and body_len (bytes of body read).
  /slow?ms=N   the same, after N ms (60 s at most)
  /ws          WebSocket echo (text and binary)
  /ws-headers  WebSocket: one JSON message, the handshake's headers, then close
  /__seen      the raw paths of every request so far (this one not included), JSON
"""

import asyncio

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocketDisconnect

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

# Every request's raw path, in order of arrival: a test asks whether anything got through.
SEEN = []


def describe(route):
    """An endpoint that answers what it received, naming `route`."""

    async def endpoint(request):
        SEEN.append(request.scope["raw_path"].decode("latin-1"))
        if route == "slow":
            ms = min(int(request.query_params.get("ms", "0")), 60_000)
            await asyncio.sleep(ms / 1000)
        body = await request.body()
        scope = request.scope
        return JSONResponse({
            "path": scope["path"],
            "raw_path": scope["raw_path"].decode("latin-1"),
            "route": route,
            "method": request.method,
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
            "http_version": scope["http_version"],
            "body_len": len(body),
        })

    return endpoint


async def echo(websocket):
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            else:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect:
        return


async def seen(request):
    return JSONResponse({"paths": SEEN})


async def ws_headers(websocket):
    SEEN.append(websocket.scope["raw_path"].decode("latin-1"))
    await websocket.accept()
    headers = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in websocket.scope["headers"]]
    await websocket.send_json({"headers": headers})
    await websocket.close()


def route(path, name):
    return Route(path, describe(name), methods=METHODS, name=name)


app = Starlette(routes=[
    Route("/__seen", seen),
    route("/", "public"),
    route("/settings", "settings"),
    route("/admin/{user}/settings", "admin_user_settings"),
    route("/admin/secret", "admin_secret"),
    route("/admin/", "admin"),
    route("/slow", "slow"),
    WebSocketRoute("/ws", echo, name="ws"),
    WebSocketRoute("/ws-headers", ws_headers, name="ws_headers"),
    route("/{path:path}", "catch_all"),
])
