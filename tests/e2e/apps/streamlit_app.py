"""A small Streamlit app of the kind the gateway fronts: a counter (every click is a
round trip over the WebSocket /_stcore/stream) and a file uploader (a PUT with
Streamlit's XSRF cookie)."""

import hashlib

import streamlit as st

st.title("image.example: Streamlit behind the gateway")
if "count" not in st.session_state:
    st.session_state.count = 0
if st.button("Increment"):
    st.session_state.count += 1
st.write(f"count: {st.session_state.count}")

uploaded = st.file_uploader("Upload a file")
if uploaded is not None:
    data = uploaded.getvalue()
    st.write(f"received {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:16]}")
