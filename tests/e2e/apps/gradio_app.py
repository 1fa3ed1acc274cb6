"""A small Gradio app of the kind the gateway fronts: a streaming generator, an upload
that answers the file's size and hash, and a file output. PORT comes from the
environment; analytics are off (GRADIO_ANALYTICS_ENABLED=False, set by the suite)."""

import hashlib
import os
import tempfile
import time

import gradio as gr


def generate(count):
    """Yields a growing text, one token every 0.4 s, like an LLM token stream."""
    text = ""
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
)
