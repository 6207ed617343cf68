"""Command line: `python -m backend generate ...` and `python -m backend policies`."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from .checkpoint import CheckpointError
from .flow import sampler_config
from .models.wan_loading import add_wan_arguments, wan_only_given
from .prompt import PromptError
from .settings import parse_params
from .summary import layout_bytes


def _policy_kwargs(items: list[str]) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--policy-arg expects KEY=VALUE, got {item!r}")
        out.update(parse_params(item))
    return out


WAN = "wan:"  # --model wan:DIR selects a Wan2.1-based generator folder


def _load_wan(a):
    """(model, decoder, sampler) of `--model wan:DIR` on `--device` (bf16 on a GPU unless --dtype says)."""
    from .models.wan_loading import load_wan, wan_options
    from .models.wan_parts import WAN_SAMPLER

    dtype, size = wan_options(a.device, a.dtype, a.size)
    model, decoder = load_wan(a.model[len(WAN) :], a.generator, a.device, dtype, frame_size=size)
    return model, decoder, sampler_config(a.sampler, WAN_SAMPLER)


def cmd_generate(a) -> int:
    import torch
    from tqdm import tqdm

    from .build import build_policy
    from .loading import DEFAULT_MODEL, folder_autoencoder, load_autoencoder, load_model, random_model
    from .policies import make_policy, parse_budget
    from .prompt import parse
    from .stepper import Stepper, validate_frames
    from .video_io import write_video

    torch.set_num_threads(a.threads) if a.threads else None
    if not a.out.lower().endswith((".mp4", ".gif")):
        raise ValueError(f"--out must end in .mp4 or .gif, got {a.out!r}")
    wan = bool(a.model) and a.model.startswith(WAN)
    if not wan:
        parse(a.prompt)  # fail fast, before loading anything
        given = wan_only_given(a) + (["--models-dir"] if a.models_dir else [])
        if given:
            raise ValueError(f"{', '.join(given)}: only for a Wan generator (--model wan:DIR)")
    validate_frames(a.frames)
    kwargs = _policy_kwargs(a.policy_arg)
    if a.budget is not None:
        parse_budget(a.budget)  # malformed budgets fail before loading
    make_policy(a.policy, **kwargs)  # unknown names / parameters fail before loading
    if wan:
        model, ae, sampler = _load_wan(a)
        folder = Path(a.models_dir or a.model[len(WAN) :])  # its salience heads: never the world model's
    else:
        sampler = sampler_config(a.sampler)
        model = random_model(a.preset, a.seed) if a.preset else load_model(a.model or DEFAULT_MODEL)
        ae = load_autoencoder(a.ae or folder_autoencoder(Path(a.model or DEFAULT_MODEL).parent))
        folder = None if a.preset else Path(a.model or DEFAULT_MODEL).parent  # its salience heads
    policy = build_policy(
        a.policy, a.budget, a.frames, model, ae, a.prompt, a.seed, kwargs, sampler=sampler, models=folder
    )
    st = Stepper(model, ae, a.prompt, a.frames, seed=a.seed, policy=policy, preview=False, sampler=sampler)
    t0 = time.perf_counter()
    with tqdm(total=st.n_frames, desc="frames", unit="frame", disable=a.quiet) as bar:
        for rec in st.run():
            if rec.phase == "evict":
                bar.update(rec.frames[1] - rec.frames[0])
            if rec.timings is not None:
                ms = rec.timings["frame_ms"]  # the run's timings travel with its last record
    total = time.perf_counter() - t0
    write_video(st.video, a.out, fps=a.fps, scale=a.scale)
    if a.timings:
        print("frame     ms")
    if a.timings:
        for i, m in enumerate(ms):
            print(f"{i:5d}  {m:6.1f}")
    print(
        f"wrote {a.out}: {st.n_frames} frames in {total:.1f} s; per-frame ms median {np.median(ms):.1f}, "
        f"p90 {np.percentile(ms, 90):.1f}, max {ms.max():.1f}; final KV {rec.nbytes.sum() / 1e6:.2f} MB "
        f"({rec.occupancy[0]} tokens/layer)"
        + (
            ""
            if rec.heads is None
            else f"; heads hold {rec.heads.sum(1).max() / rec.heads.shape[1]:.0f} tokens each on average, "
            f"the (heads, tokens) layout {layout_bytes(rec) / 1e6:.2f} MB"
        )
    )
    return 0


def cmd_policies(a) -> int:
    from .policies import POLICIES, describe_reads
    from .policies.build import policy_parameters, shared_parameters

    w = max(map(len, POLICIES))
    labels = {name: describe_reads(name)[0] for name in POLICIES}
    r = max(5, *map(len, labels.values()))
    print(f"{'policy':<{w}}  {'reads':<{r}}  description  [own parameters]")
    for name, desc in sorted((n, e.help) for n, e in POLICIES.items()):
        own = ", ".join(f"{k}={v}" for k, v in policy_parameters(name).items())
        print(f"{name:<{w}}  {labels[name]:<{r}}  {desc}" + (f"  [{own}]" if own else ""))
    print(
        "\nreads: the attention statistics the policy's commits record. attn = materialised attention "
        "probabilities (fused FlashAttention-style kernels never form them: the explicit pass is part of the "
        "policy's cost, counted in `python -m backend.bench policies`' overhead; attn 0.125 = of that share of "
        "a commit's queries, ZipCache-style probes, set by probe=); q.k = raw logit sums (one "
        "matrix-vector product beside the fused kernel); - = none (pafu with alpha=0, its head alone, reads none)."
        f"\n\nevery policy (--policy-arg KEY=VALUE, repeatable): {shared_parameters()}"
    )
    return 0


def cmd_convert(a) -> int:
    from .models.wan_loading import convert

    if not a.out.endswith(".safetensors"):
        raise ValueError(f"--out must end in .safetensors, got {a.out!r}")
    n = convert(a.checkpoint, a.out)
    print(f"wrote {a.out}: {n} tensors in diffusers' names")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser (the explorer's "as a command line" is tested against it)."""
    ap = argparse.ArgumentParser(
        prog="python -m backend",
        description="Autoregressive video diffusion with an "
        "inspectable KV cache: generate videos, list cache policies.",
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser(
        "generate",
        help="generate a video and write it as MP4 (or GIF)",
        description="Generate a video chunk by chunk with a KV-cache policy; writes a browser-playable "
        "MP4 (h264, yuv420p) and prints per-frame timings.",
    )
    g.add_argument("--prompt", required=True, help="e.g. 'a red circle and a square on blue stripes behind a wall'")
    g.add_argument("--frames", type=int, default=64, help="number of frames to generate (default 64)")
    g.add_argument("--seed", type=int, default=0, help="noise seed; runs with equal seeds share noise (default 0)")
    g.add_argument("--policy", default="full", help="cache policy name (see `python -m backend policies`)")
    g.add_argument("--policy-arg", action="append", metavar="KEY=VALUE", help="policy parameter, e.g. frames=8")
    g.add_argument(
        "--budget",
        help="cache budget per layer: tokens (2048), frame-equivalents (8f), a share of "
        "the full cache at --frames (12.5%%), or bytes over all layers (512KB, 2MB)",
    )
    g.add_argument(
        "--sampler",
        action="append",
        metavar="KEY=VALUE",
        help="sampler setting, e.g. steps=8, renoise=false, first_steps=none, first_guidance=3 "
        "(fields of backend.config.SamplerConfig; default: the shipped sampler)",
    )
    g.add_argument("--out", default="out.mp4", help="output path ending in .mp4 or .gif (default out.mp4)")
    g.add_argument("--fps", type=int, default=12, help="frames per second of the video (default 12)")
    g.add_argument("--scale", type=int, default=4, help="integer upscale of the 64x64 frames (default 4)")
    g.add_argument(
        "--model",
        help="student weights (.safetensors; default: the shipped model), or wan:DIR, a diffusers-format "
        "Wan2.1-T2V-1.3B folder (transformer/ vae/ text_encoder/ tokenizer/); --frames then counts latent frames",
    )
    add_wan_arguments(g)
    g.add_argument(
        "--models-dir",
        help="with wan:DIR: the folder of its PaFu-KV salience head (`python -m backend.train salience --model "
        "wan:DIR --models-dir ...`; default DIR)",
    )
    g.add_argument(
        "--ae",
        help="autoencoder weights (.safetensors); default: the one beside --model (a training "
        "run's --models-dir), else the shipped autoencoder",
    )
    g.add_argument("--preset", help="use a seeded random model of this preset instead of weights (testing)")
    g.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    g.add_argument(
        "--timings",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="print one line per frame with its time in ms (default on)",
    )
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.set_defaults(fn=cmd_generate)
    p = sub.add_parser("policies", help="list the cache policies with one-line descriptions")
    p.set_defaults(fn=cmd_policies)
    c = sub.add_parser(
        "convert",
        help="convert a Self-Forcing / CausVid generator checkpoint to diffusers-named safetensors",
        description="Read a generator checkpoint (original Wan or diffusers key layout; .pt weights-only, the EMA "
        "generator preferred) and write its weights as safetensors with diffusers' names.",
    )
    c.add_argument("checkpoint", help="the generator checkpoint (.pt or .safetensors)")
    c.add_argument("--out", required=True, help="output .safetensors file")
    c.set_defaults(fn=cmd_convert)
    return ap


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    try:
        return a.fn(a)
    except (PromptError, CheckpointError, ValueError, KeyError, TypeError, FileNotFoundError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
