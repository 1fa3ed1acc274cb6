"""A small Gradio app of the kind the gateway fronts: a streaming generator, an upload
that answers the file's size and hash, and a file output. PORT comes from the
environment; analytics are off (GRADIO_ANALYTICS_ENABLED=False, set by the suite).

The suite runs it as two replicas behind one route. REPLICA names the process: the
generated text starts with "[REPLICA] ", so a streamed value shows which replica made
it. With REQUEST_LOG set, every HTTP request the app receives is appended there as a
JSON line (replica, method, path, user agent, X-Forwarded-Proto, X-Forwarded-User,
whether an X-API-Key or Authorization field came): the replica's own record of what the
gateway sent it."""

import hashlib
import json
import os
import tempfile
import time

import gradio as gr
from starlette.middleware import Middleware

REPLICA = os.environ.get("REPLICA", "")
REQUEST_LOG = os.environ.get("REQUEST_LOG")


class RequestLog:
    """ASGI middleware: one line per HTTP request, written when it arrives."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and REQUEST_LOG:
            headers = dict(scope["headers"])
            line = {
                "replica": REPLICA,
                "method": scope["method"],
                "path": scope["path"],
                "user_agent": headers.get(b"user-agent", b"").decode("latin-1"),
                # Set by the gateway; Gradio's own start-up requests to itself have none.
                "x_forwarded_proto": headers.get(b"x-forwarded-proto", b"").decode("latin-1"),
                "x_forwarded_user": headers.get(b"x-forwarded-user", b"").decode("latin-1"),
                "credentials": b"x-api-key" in headers or b"authorization" in headers,
            }
            with open(REQUEST_LOG, "a") as f:
                f.write(json.dumps(line) + "\n")
        await self.app(scope, receive, send)


def generate(count):
    """Yields a growing text, one token every 0.4 s, like an LLM token stream."""
    text = f"[{REPLICA}] " if REPLICA else ""
    for i in range(int(count)):
        time.sleep(0.4)
        text += f"token{i} "
        yield text


def measure(path):
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return f"{size} {digest.hexdigest()}"


def make_file(text):
    fd, path = tempfile.mkstemp(suffix=".txt")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


with gr.Blocks(title="voice: Gradio behind the gateway") as demo:
    gr.Markdown("# voice.example: Gradio behind the gateway")
    with gr.Row():
        count = gr.Number(value=8, label="tokens", precision=0)
        generated = gr.Textbox(label="generated", elem_id="generated")
    gr.Button("Generate", elem_id="generate").click(
        generate, count, generated, api_name="generate"
    )
    with gr.Row():
        upload = gr.File(label="upload", type="filepath", elem_id="upload")
        measured = gr.Textbox(label="size and sha256", elem_id="measured")
    gr.Button("Measure", elem_id="measure").click(measure, upload, measured, api_name="measure")
    with gr.Row():
        text = gr.Textbox(label="file text", value="hello from gradio")
        download = gr.File(label="download")
    gr.Button("Make file").click(make_file, text, download, api_name="make_file")

demo.queue().launch(
    server_name="127.0.0.1",
    server_port=int(os.environ["PORT"]),
    max_file_size="100mb",
    ssr_mode=False,
    show_error=True,
    app_kwargs={"middleware": [Middleware(RequestLog)]},
)
