"""A live ``msmm-serve`` subprocess on 127.0.0.1, for the tests (tests/serve) and the load
test (benchmarks/serve.py)."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Iterator, List

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def live_server(args: List[str], log_path: str, timeout: float = 300) -> Iterator[str]:
    """``msmm-serve ARGS --port P`` until /health answers; yields its base URL; stops it after."""
    port = free_port()
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "msmm.serve.cli", *args, "--port", str(port)], cwd=REPO,
                                stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, GLOG_v="3"))
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + timeout
        try:
            while True:
                try:
                    urllib.request.urlopen(url + "/health", timeout=2)
                    break
                except (urllib.error.URLError, ConnectionError):
                    if proc.poll() is not None or time.time() > deadline:
                        log.flush()
                        raise RuntimeError(open(log_path).read()[-3000:]) from None
                    time.sleep(0.5)
            yield url
        finally:
            proc.terminate()
            proc.wait(60)
