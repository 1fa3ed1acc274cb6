"""The soak's app: one replica (SOAK_ROLE=replica, SOAK_REPLICA=a|b) or the sign-on
service (SOAK_ROLE=signon), run by uvicorn.

Replica endpoints, each naming the replica so a client knows where it was served:
  GET  /             a 2 KiB page
  GET  /health       the gateway's health check
  GET  /api/echo     JSON with the identity field the gateway set (X-Forwarded-User)
  GET  /gen/work?ms=N  answers after N ms (the route with max_concurrent and a queue)
  GET  /sse?seconds=N  an event stream: `hello` (replica), one numbered event a second, `end`
  WS   /ws           `hello REPLICA`, then echoes every message
  POST /upload       reads the body as it comes, answers 200 when its SHA-256 and length
                     match X-Content-Sha256 and X-Content-Bytes, 422 when not
Sign-on service:
  GET  /auth         200 with X-Auth-Request-User for `Authorization: Bearer soak-sso`, else 401
"""
import asyncio
import hashlib
import json
import os

from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute

REPLICA = os.environ.get("SOAK_REPLICA", "?")
PAGE = ("soak page from replica " + REPLICA + "\n").ljust(2048, ".")


async def page(request):
    return PlainTextResponse(PAGE, headers={"X-Replica": REPLICA})


async def health(request):
    return PlainTextResponse("ok")


async def api_echo(request):
    user = request.headers.getlist("x-forwarded-user")
    leaked = [h for h in ("x-api-key", "authorization") if h in request.headers]
    return JSONResponse({"replica": REPLICA, "user": user, "leaked": leaked})


async def work(request):
    ms = min(int(request.query_params.get("ms", "100")), 60_000)
    await asyncio.sleep(ms / 1000)
    return PlainTextResponse("done", headers={"X-Replica": REPLICA})


async def sse(request):
    seconds = min(int(request.query_params.get("seconds", "60")), 3600)

    async def events():
        yield f"event: hello\ndata: {REPLICA}\n\n".encode()
        for i in range(seconds):
            await asyncio.sleep(1)
            yield f"data: {i}\n\n".encode()
        yield b"event: end\ndata: done\n\n"

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Replica": REPLICA})


async def ws(websocket):
    await websocket.accept()
    await websocket.send_text("hello " + REPLICA)
    try:
        while True:
            msg = await websocket.receive_text()
            await websocket.send_text(msg)
    except Exception:
        return


async def upload(request):
    want_sha = request.headers.get("x-content-sha256", "")
    want_len = int(request.headers.get("x-content-bytes", "-1"))
    digest, size = hashlib.sha256(), 0
    async for chunk in request.stream():
        digest.update(chunk)
        size += len(chunk)
    ok = digest.hexdigest() == want_sha and size == want_len
    body = json.dumps({"replica": REPLICA, "bytes": size, "ok": ok})
    return Response(body, status_code=200 if ok else 422, media_type="application/json")


async def auth(request):
    if request.headers.get("authorization") == "Bearer soak-sso":
        return PlainTextResponse("ok", headers={"X-Auth-Request-User": "soak-user"})
    return PlainTextResponse("who are you", status_code=401)


if os.environ.get("SOAK_ROLE") == "signon":
    routes = [Route("/auth", auth)]
else:
    routes = [
        Route("/", page),
        Route("/health", health),
        Route("/api/echo", api_echo),
        Route("/gen/work", work),
        Route("/sse", sse),
        WebSocketRoute("/ws", ws),
        Route("/upload", upload, methods=["POST"]),
    ]
app = Starlette(routes=routes)
