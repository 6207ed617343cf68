"""What the browser tests share: Debian's chromium, and the app served by `python app.py` in a subprocess."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(sessions, gradio_tmp, extra: list[str] = (), wait_s: float = 90):
    """Start `python app.py` with its own sessions folder (and `extra` arguments); yields its URL, then stops
    it. A generator for module fixtures."""
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_TEMP_DIR": str(gradio_tmp)}
    proc = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(port), "--sessions", str(sessions), *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    t0 = time.time()
    while time.time() - t0 < wait_s:
        try:
            urllib.request.urlopen(url + "/gradio_api/info", timeout=2)
            break
        except Exception as e:
            if proc.poll() is not None:
                raise RuntimeError("app exited:\n" + proc.stdout.read()) from e
            time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError(f"app did not start in {wait_s:.0f} s")
    yield url
    proc.terminate()
    proc.wait(10)
