"""The OpenAI Python SDK as a program uses it, through the gateway (tests/api_keys.rs):

  .venv/bin/python openai_client.py BASE_URL KEY CA_FILE

Streams one chat completion and prints its text on one line. Exits 3 and prints
`401 MESSAGE` when the key is refused. Host names under `.test` resolve to 127.0.0.1.
"""

import socket
import sys

import openai

_getaddrinfo = socket.getaddrinfo


def loopback(host, *args, **kwargs):
    if isinstance(host, str) and host.endswith(".test"):
        host = "127.0.0.1"
    return _getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = loopback

base_url, key, ca = sys.argv[1], sys.argv[2], sys.argv[3]
client = openai.OpenAI(
    base_url=base_url,
    api_key=key,
    max_retries=0,
    timeout=30,
    http_client=openai.DefaultHttpx2Client(verify=ca),
)
try:
    stream = client.chat.completions.create(
        model="local",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
except openai.AuthenticationError as e:
    print(f"401 {e.message}")
    sys.exit(3)
print(text)
