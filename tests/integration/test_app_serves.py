"""`make run` serves a page: start app.py as a user would and fetch it over HTTP."""

from __future__ import annotations

import os

import pytest
from proc_support import app_process, free_port


@pytest.mark.integration
def test_app_serves_page_on_gradio_server_port():
    port = free_port()
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    with app_process(env) as server:
        body = server.wait_http(f"http://127.0.0.1:{port}/", timeout=120)
    assert "uhead-viz" in body
