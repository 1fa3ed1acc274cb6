"""A Starlette app that reports exactly what it received, for the integration tests
(tests/common/apps.rs) that run it under real servers (uvicorn, hypercorn) to see how
they read request targets the proxy has already judged.

  .venv/bin/uvicorn app:app --host 127.0.0.1 --port PORT --no-access-log
  .venv/bin/hypercorn app:app --bind 127.0.0.1:PORT

Every HTTP request gets 200 and JSON: path, raw_path (latin-1), query (latin-1), route
(the name of the Starlette route matched), method, headers (as received, names
lower-case), http_version and body_len (bytes of body read).
  /slow?ms=N   the same, after N ms (60 s at most)
  /ws          WebSocket echo (text and binary)
  /ws-headers  WebSocket: one JSON message, the handshake's raw_path, query and headers,
               then close
  /v1/chat/completions  an OpenAI-compatible chat completion, streamed as server-sent
               events when asked (`"stream": true`): its words say who the request came
               from (`x-forwarded-user`) and whether an `Authorization` field reached the app
  /__seen      the raw paths of every request so far (this one not included), JSON
"""

import asyncio
import json

from starlette.applications import Starlette
from starlette.responses import JSONResponse, StreamingResponse
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
            "query": scope["query_string"].decode("latin-1"),
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
    await websocket.send_json({
        "raw_path": websocket.scope["raw_path"].decode("latin-1"),
        "query": websocket.scope["query_string"].decode("latin-1"),
        "headers": headers,
    })
    await websocket.close()


async def chat_completions(request):
    """An OpenAI-compatible `POST /v1/chat/completions` (what vLLM serves)."""
    SEEN.append(request.scope["raw_path"].decode("latin-1"))
    body = await request.json()
    user = request.headers.get("x-forwarded-user", "nobody")
    auth = "with-authorization" if "authorization" in request.headers else "no-authorization"
    words = ["Hello", " from", f" {user}", f" {auth}"]
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0,
            "model": body.get("model", "m")}
    if not body.get("stream"):
        message = {"role": "assistant", "content": "".join(words)}
        return JSONResponse({**base, "object": "chat.completion",
                             "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})

    async def events():
        for word in words:
            chunk = {**base, "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
            yield f"data: {json.dumps(chunk)}\n\n"
            await asyncio.sleep(0.05)
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


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
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    WebSocketRoute("/ws", echo, name="ws"),
    WebSocketRoute("/ws-headers", ws_headers, name="ws_headers"),
    route("/{path:path}", "catch_all"),
])
