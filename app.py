"""KV-cache explorer: `python app.py` serves the Gradio app on http://127.0.0.1:7860 with the shipped model."""

from __future__ import annotations

import argparse
import os
import sys
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description="Gradio explorer of KV-cache policies for autoregressive video "
        "diffusion (runs offline on the CPU with the shipped model)."
    )
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    ap.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    ap.add_argument("--sessions", default=None, help="folder of saved sessions (default: sessions/)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    ap.add_argument(
        "--models",
        default=None,
        help="weights folder: a training run's --models-dir (its student, "
        "and its autoencoder, teacher and salience heads where it has them; a missing autoencoder "
        "falls back to the shipped one); default: the shipped assets/models/",
    )
    a = ap.parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    t0 = time.perf_counter()
    import torch

    from explorer.controller import Explorer
    from explorer.sessions import DEFAULT_ROOT, SessionStore
    from explorer.ui import build, launch_kwargs

    if a.threads:
        torch.set_num_threads(a.threads)
    root = a.sessions or DEFAULT_ROOT
    from backend.checkpoint import CheckpointError

    try:
        ex = Explorer(store=SessionStore(root), **({"models": a.models} if a.models else {}))
    except (FileNotFoundError, CheckpointError) as e:  # no student there, or a damaged weights file
        ap.error(str(e))
    demo = build(ex)
    demo.queue(default_concurrency_limit=2, max_size=64)
    kw = launch_kwargs()
    kw["allowed_paths"] = [str(root)]
    print(f"explorer ready to serve after {time.perf_counter() - t0:.1f} s", flush=True)
    demo.launch(server_name=a.host, server_port=a.port, show_error=True, **kw)
    return 0


if __name__ == "__main__":
    sys.exit(main())
