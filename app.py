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
    ap.add_argument(
        "--model",
        default=None,
        help="wan:DIR serves a Wan2.1-based generator from a local diffusers-format folder (transformer/ vae/ "
        "text_encoder/ tokenizer/) instead of the shipped model; --models is then the folder of its PaFu-KV "
        "salience head (default DIR)",
    )
    from backend.models.wan_loading import add_wan_arguments, wan_only_given

    add_wan_arguments(ap)
    a = ap.parse_args(argv)
    wan = a.model is not None
    if wan and not a.model.startswith("wan:"):
        ap.error(f"--model takes wan:DIR (a Wan2.1 generator folder), got {a.model!r}; the world's weights: --models")
    if not wan and wan_only_given(a):
        ap.error(f"{', '.join(wan_only_given(a))}: only for a Wan generator (--model wan:DIR)")
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
        if wan:
            from backend.models.wan_loading import wan_options
            from explorer.serving import wan_explorer

            dtype, size = wan_options(a.device, a.dtype, a.size)
            ex = wan_explorer(
                a.model[len("wan:") :], a.generator, a.device, dtype, size, heads=a.models, store=SessionStore(root)
            )
        else:
            ex = Explorer(store=SessionStore(root), **({"models": a.models} if a.models else {}))
    except (FileNotFoundError, CheckpointError, ValueError) as e:  # no weights there, a damaged file, a bad size
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
