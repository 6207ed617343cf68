"""Serving a generator other than the shipped world model in the explorer: a Wan2.1-based one (`python app.py
--model wan:DIR`)."""

from __future__ import annotations

from pathlib import Path

from backend.loading import load_head
from backend.salience import head_file

from .controller import Explorer


def wan_explorer(
    folder, generator=None, device: str = "cpu", dtype=None, size: tuple[int, int] = (480, 832), heads=None, **kw
) -> Explorer:
    """Serve a Wan2.1-based generator from a local diffusers-format folder (`--model wan:DIR`), with a
    Self-Forcing / CausVid `generator` checkpoint if given; `heads`: the folder of its PaFu-KV salience
    heads (`python -m backend.train salience --model wan:DIR --models-dir HEADS`; default the model folder).
    The teacher (the folder's bidirectional Wan2.1 transformer) loads on first use."""
    import torch

    from backend.models.wan_loading import load_wan, load_wan_teacher, wan_identity

    dtype = dtype or torch.float32
    model, decoder = load_wan(folder, generator, device, dtype, frame_size=size)
    heads = Path(heads or folder)
    try:
        head = load_head(heads / head_file("sse"))
    except FileNotFoundError:  # no head distilled yet: the `predicted` signal is simply absent
        head = None
    if head is not None:
        head.check(model.geometry)  # a head distilled for another model is named, not drawn
    args = ["--model", f"wan:{folder}"] + (["--generator", str(generator)] if generator else [])
    args += ["--size", f"{size[0]}x{size[1]}", "--device", device]
    args += ["--models-dir", str(heads)] if Path(heads).resolve() != Path(folder).resolve() else []
    meta = {"model": f"wan:{folder}"} | ({"generator": str(generator)} if generator else {})
    return Explorer(
        model=model,
        ae=decoder,
        head=head,
        models=heads,
        kind="wan",
        model_args=tuple(args),
        teacher_loader=lambda: load_wan_teacher(folder, model, generator),
        model_hash=wan_identity(folder, generator),
        meta_model=meta,
        **kw,
    )
