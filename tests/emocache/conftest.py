"""Fixtures of the emocache tests: ``moto_endpoint``, a moto S3 server in its own process on 127.0.0.1, and
``fbank_store``, the demo corpus extracted with fbank-stats once per test module."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_endpoint():
    """``(endpoint_url, storage_options)`` of a moto S3 server subprocess on 127.0.0.1 (HTTP, not in-process)."""
    exe = Path(sys.executable).with_name("moto_server")
    if not exe.exists():
        pytest.skip("moto[server] is not installed (pip install 'moto[server]')")
    port = _free_port()
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("moto_server did not start")
    opts = {"key": "testing", "secret": "testing", "endpoint_url": url,
            "client_kwargs": {"region_name": "us-east-1"}}
    try:
        yield url, opts
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def fbank_store(tmp_path_factory, demo_corpus) -> Path:
    """A local store of the demo corpus extracted with fbank-stats (the reference the share tests compare to)."""
    from emocache.extract import extract
    from tests.helpers.scale import fbank_config

    store = tmp_path_factory.mktemp("fbank") / "store"
    extract(fbank_config(demo_corpus, store), progress=False)
    return store
