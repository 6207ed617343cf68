"""Explorer benchmark: `python -m explorer.bench` measures what issue 4 asks of the app on this machine.

- startup: `python app.py` until the server answers (target: ready within 20 s),
- "step frame" round trip through the API with the shipped model (target: at most 500 ms),
- server memory (RSS) over a 512-frame run with a bounded policy (target: bounded; reports the peak),
- 4 concurrent API clients generating at once (all must complete),
- Stop during a streamed run: seconds from the Stop call until the stream has paused, and frames generated
  after the newest streamed update the client had seen (what a user sees happen after clicking Stop).
Writes docs/results/explorer.json and .md. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "a red circle and a square on blue stripes behind a wall"
VIEW = ("score", "mean", "inferno")


def run_args(
    seed: int,
    frames: int,
    policy: str,
    budget: float,
    guidance: float | None = None,
    unit: str = "frames",
    params: str = "",
    prompt: str = PROMPT,
    view: tuple = VIEW,
) -> tuple:
    """The inputs of the app's /step_frame and /generate, in the app's order: prompt, seed, frames, colour
    guidance (default: the shipped sampler's, what a user gets), policy, budget, budget unit, policy
    parameters, then the view (signal, layer, colour map)."""
    from backend.config import SamplerConfig

    g = SamplerConfig().guidance if guidance is None else guidance
    return (prompt, seed, frames, g, policy, budget, unit, params, *view)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_app(sessions: str) -> tuple[subprocess.Popen, str, float]:
    port = _port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(port), "--sessions", sessions],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            urllib.request.urlopen(url + "/gradio_api/info", timeout=2)
            return proc, url, time.perf_counter() - t0
        except Exception as e:
            if proc.poll() is not None or time.perf_counter() - t0 > 120:
                raise RuntimeError("the app did not start") from e
            time.sleep(0.1)


def step_frame_round_trips(url: str, n: int, budget: int) -> list[float]:
    from gradio_client import Client

    c = Client(url, verbose=False)
    args = run_args(0, n + 32, "window", budget)
    out = []
    for _ in tqdm(range(n), desc="step frame round trips"):
        t = time.perf_counter()
        c.predict(*args, api_name="/step_frame")
        out.append((time.perf_counter() - t) * 1e3)
    return out


def memory_run(url: str, pid: int, frames: int, budget: int) -> dict:
    from gradio_client import Client

    c = Client(url, verbose=False)
    samples, stop = [], threading.Event()

    def poll():
        while not stop.is_set():
            samples.append((time.perf_counter(), _rss_mb(pid)))
            time.sleep(0.2)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    t0 = time.perf_counter()
    job = c.submit(*run_args(1, frames, "window", budget), api_name="/generate")
    last = job.result()
    total = time.perf_counter() - t0
    stop.set()
    th.join()
    rss = np.array([m for _, m in samples])
    q = len(rss) // 4
    return {
        "frames": frames,
        "policy": f"window {budget}f",
        "seconds": total,
        "rss_start_mb": float(rss[0]),
        "rss_peak_mb": float(rss.max()),
        "rss_second_quarter_mb": float(rss[q : 2 * q].mean()),
        "rss_last_quarter_mb": float(rss[-q:].mean()),
        "status": last[5].splitlines()[0],
    }


def _frames_done(status: str) -> int:
    import re

    m = re.search(r"(\d+)/\d+ frames", status)
    return int(m.group(1)) if m else -1


def stop_latency(url: str, tries: int = 5, after: int = 16, frames: int = 400) -> dict:
    """Stop during streamed runs: seconds from the Stop call until the stream ends paused, and the frames made
    after the newest update the client had received by then."""
    from gradio_client import Client

    c = Client(url, verbose=False)
    secs, extra = [], []
    for k in tqdm(range(tries), desc="stop latency"):
        job = c.submit(*run_args(100 + k, frames, "window", 16), api_name="/generate")
        seen = -1
        while seen < after:
            outs = job.outputs()
            seen = _frames_done(outs[-1][5]) if outs else -1
            time.sleep(0.02)
        t = time.perf_counter()
        c.predict(*VIEW, api_name="/stop")
        last = job.result()
        secs.append(time.perf_counter() - t)
        assert "paused" in last[5], last[5]
        extra.append(_frames_done(last[5]) - seen)
    return {
        "tries": tries,
        "seconds_median": float(np.median(secs)),
        "seconds_max": float(np.max(secs)),
        "frames_after_median": float(np.median(extra)),
        "frames_after_max": int(np.max(extra)),
    }


def concurrent_clients(url: str, n: int = 4, frames: int = 16) -> dict:
    from gradio_client import Client

    done, errors = [], []

    def work(seed):
        try:
            c = Client(url, verbose=False)
            t = time.perf_counter()
            job = c.submit(*run_args(seed, frames, "h2o", 4), api_name="/generate")
            job.result()
            done.append(time.perf_counter() - t)
        except Exception as e:  # reported, not raised
            errors.append(repr(e))

    ths = [threading.Thread(target=work, args=(s,)) for s in range(n)]
    t0 = time.perf_counter()
    for t in ths:
        t.start()
    for t in ths:
        t.join(600)
    return {
        "clients": n,
        "frames_each": frames,
        "completed": len(done),
        "errors": errors,
        "wall_s": time.perf_counter() - t0,
        "max_client_s": max(done) if done else None,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--round-trips", type=int, default=40)
    ap.add_argument("--frames", type=int, default=512)
    ap.add_argument("--budget", type=int, default=16, help="window budget in frames")
    ap.add_argument("--out", default=str(ROOT / "docs" / "results"))
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as sessions:
        proc, url, startup = start_app(sessions)
        try:
            rt = step_frame_round_trips(url, a.round_trips, a.budget)
            mem = memory_run(url, proc.pid, a.frames, a.budget)
            conc = concurrent_clients(url)
            stop = stop_latency(url)
        finally:
            proc.terminate()
            proc.wait(10)
    res = {
        "startup_s": startup,
        "step_frame_ms": {
            "median": float(np.median(rt)),
            "p90": float(np.percentile(rt, 90)),
            "max": float(np.max(rt)),
            "n": len(rt),
        },
        "memory": mem,
        "concurrent": conc,
        "stop": stop,
        "cpu_count": os.cpu_count(),
    }
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "explorer.json").write_text(json.dumps(res, indent=2))
    md = [
        "# Explorer benchmark (`python -m explorer.bench`)",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M')}. Machine: {os.cpu_count()} CPU cores, shipped model, the app's default "
        f"sampler (colour guidance {run_args(0, 1, '', 0)[3]:g}: two passes per denoise step). Targets from issue 4.",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| startup (`python app.py` until it serves) | {startup:.1f} s | ≤ 20 s |",
        f"| step-frame round trip through the API, median / p90 / max ({len(rt)} frames, window {a.budget}f) | "
        f"{np.median(rt):.0f} / {np.percentile(rt, 90):.0f} / {np.max(rt):.0f} ms | ≤ 500 ms |",
        f"| server RSS over a {a.frames}-frame run (window {a.budget}f): start / 2nd quarter / last quarter / peak | "
        f"{mem['rss_start_mb']:.0f} / {mem['rss_second_quarter_mb']:.0f} / {mem['rss_last_quarter_mb']:.0f} / "
        f"{mem['rss_peak_mb']:.0f} MB | bounded |",
        f"| {a.frames}-frame streamed run, end to end | {mem['seconds']:.1f} s | |",
        f"| 4 concurrent API clients, 16 frames each | {conc['completed']}/4 completed in {conc['wall_s']:.1f} s | all "
        "complete |",
        f"| Stop during a streamed run ({stop['tries']} runs): seconds until paused, median / max; frames made after "
        f"the newest update the client had, median / max | {stop['seconds_median']:.2f} / {stop['seconds_max']:.2f} s;"
        f" {stop['frames_after_median']:.0f} / {stop['frames_after_max']} frames | pauses, not aborts |",
        "",
    ]
    (out / "explorer.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
