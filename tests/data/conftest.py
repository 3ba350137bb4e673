"""Fixtures of the data tests: a real HTTP server on 127.0.0.1 for the download paths."""

import functools
import http.server
import threading

import pytest


def isolated_cache(tmp_path, monkeypatch):
    """Point the reslab cache into ``tmp_path`` and keep the download tests off any real data or proxy."""
    path = tmp_path / "cache"
    monkeypatch.setenv("RESLAB_CACHE", str(path))
    monkeypatch.delenv("RESLAB_DATA", raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    return path


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving tmp_path/www; yields (directory, base URL)."""
    www = tmp_path / "www"
    www.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield www, f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
