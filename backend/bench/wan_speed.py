"""`python -m backend.bench.wan_speed [--shape 1.3b|proxy|tiny] [--frames N] [--out DIR]`: per-chunk latency, KV
memory and policy overhead of the Wan generator under the cache policies, on random weights (speed does not
depend on them). Decoding is left out (a null decoder): what is timed is the transformer against its cache.

Shapes: `1.3b` is Wan2.1-T2V-1.3B (30 blocks, 12 x 128 heads, 480x832: 1560 tokens per latent frame), for a GPU in
bf16 (`backend/bench/wan_gpu.sh`, time-boxed); `proxy` keeps the real token geometry (1560 tokens per latent frame,
3-frame chunks) with 2 blocks of 2 x 64 heads, for a CPU; `tiny` checks the script itself. Results: one JSON line per
(policy, budget) with per-chunk milliseconds, peak KV bytes and eviction milliseconds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

SHAPES = {
    "1.3b": dict(heads=12, head_dim=128, layers=30, ffn=8960, text_dim=4096, size=(480, 832)),
    "proxy": dict(heads=2, head_dim=64, layers=2, ffn=256, text_dim=64, size=(480, 832)),
    "tiny": dict(heads=2, head_dim=12, layers=2, ffn=32, text_dim=16, size=(64, 64)),
}
RUNS = (("full", None), ("window", 0.125), ("sink", 0.125), ("h2o", 0.125), ("pafu", 0.125), ("pafu", 0.25))


class RandomText:
    def __init__(self, dim: int):
        self.dim = dim

    def __call__(self, prompt: str) -> torch.Tensor:
        return torch.randn(512, self.dim, generator=torch.Generator().manual_seed(0))


def build(shape: str, device: str, dtype: torch.dtype):
    from diffusers import WanTransformer3DModel

    from ..models.wan import WanCausal
    from ..models.wan_parts import NullDecoder

    s = SHAPES[shape]
    torch.manual_seed(0)
    tr = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=s["heads"],
        attention_head_dim=s["head_dim"],
        in_channels=16,
        out_channels=16,
        text_dim=s["text_dim"],
        ffn_dim=s["ffn"],
        num_layers=s["layers"],
        cross_attn_norm=True,
        rope_max_seq_len=1024,
    )
    model = WanCausal(tr.to(device, dtype).eval(), RandomText(s["text_dim"]), frame_size=s["size"])
    return model, NullDecoder(s["size"])


def run(shape: str, frames: int, out: Path, device: str = "cpu", minutes: float = 60.0, runs=RUNS) -> list[dict]:
    from ..build import build_policy
    from ..config import SamplerConfig
    from ..models.wan_parts import WAN_SAMPLER
    from ..policies import make_policy
    from ..salience import SalienceHead, SEHConfig
    from ..stepper import Stepper
    from ..summary import RunSummary

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model, dec = build(shape, device, dtype)
    geo = model.geometry
    sampler = SamplerConfig(**WAN_SAMPLER)
    head_cfg = SEHConfig(n_layer=geo.n_layer, key_dim=geo.n_head * geo.head_dim, grid=geo.grid[0], cols=geo.grid[1])
    out.mkdir(parents=True, exist_ok=True)
    deadline, rows = time.time() + minutes * 60, []
    for name, share in runs:
        if time.time() > deadline:
            break
        params = {"head": SalienceHead(head_cfg)} if name == "pafu" else {}
        budget = None
        if share is not None:  # the share of the full cache, or the policy's minimum when that is more
            need = make_policy(name, **params).min_budget(geo.n_prompt, geo.tokens_per_frame, geo.chunk_frames)
            budget = max(int(share * frames * geo.tokens_per_frame), need)
        pol = build_policy(name, budget, frames, model, dec, "random text", 0, params, sampler=sampler)
        st = Stepper(model, dec, "random text", frames, policy=pol, sampler=sampler, preview=False)
        chunk_ms, t_chunk, summary = [], 0.0, RunSummary()
        for rec in st.run():
            if device == "cuda":
                torch.cuda.synchronize()
            t_chunk += rec.ms
            summary.add(rec)  # peak bytes, eviction steps, the attention statistics the policy had materialised
            if rec.phase == "evict":
                chunk_ms.append(t_chunk)
                t_chunk = 0.0
        row = {
            "shape": shape,
            "device": device,
            "policy": name,
            "share": share,
            "budget_tokens": budget,
            "frames": frames,
            "chunk_ms": chunk_ms,
            "evict_ms": summary.evict_ms,
            "stats_ms": [float(x) for x in summary.stats_ms],
            "peak_kv_bytes": summary.peak_kv_bytes,
        }
        rows.append(row)
        with open(out / "wan_speed.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{name} {share}: last chunk {chunk_ms[-1]:.0f} ms, chunk 7 {chunk_ms[min(7, len(chunk_ms) - 1)]:.0f} ms")
    return rows


def report(results: Path, out: Path) -> str:
    """README table (per run: whole-run and last-chunk speed-up against the full cache, flatness last chunk /
    chunk 7, peak KV MB, eviction share, overhead share = eviction + attention statistics) and the per-chunk
    latency plot of a results file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(x) for x in Path(results).read_text().splitlines() if x.strip()]
    full = next(r for r in rows if r["policy"] == "full")
    command = (
        f"python -m backend.bench.wan_speed --shape {full['shape']} --frames {full['frames']} --device {full['device']}"
    )
    total_full = sum(full["chunk_ms"])
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "| policy | share | budget (tokens/layer) | ms/chunk mean | speed-up (run) | speed-up (last chunk) "
        "| last / chunk 7 | peak KV MB | eviction share | overhead share |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in rows:
        ms = np.asarray(r["chunk_ms"])
        share = "full" if r["share"] is None else f"1/{round(1 / r['share'])}"
        lines.append(
            f"| {r['policy']} | {share} | {r.get('budget_tokens') or '-'} | {ms.mean():.0f} | "
            f"{total_full / ms.sum():.2f}x | {full['chunk_ms'][len(ms) - 1] / ms[-1]:.2f}x | "
            f"{ms[-1] / ms[min(7, len(ms) - 1)]:.2f} | {r['peak_kv_bytes'] / 1e6:.0f} | "
            f"{sum(r['evict_ms']) / ms.sum():.1%} | "
            + (f"{(sum(r['evict_ms']) + sum(r['stats_ms'])) / ms.sum():.1%} |" if "stats_ms" in r else "- |")
        )
        frames = (np.arange(len(ms)) + 1) * 3
        ax.plot(frames, ms / 1e3, label="full cache" if r["share"] is None else f"{r['policy']} @ {share}")
    ax.set_xlabel("latent frames generated")
    ax.set_ylabel("chunk latency (s)")
    ax.set_title(f"Wan generator, {full['shape']} shape, {full['device']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=110)
    text = "\n".join(lines)
    (out / "README.md").write_text(
        f"# Wan generator speed ({full['shape']} shape, {full['device']})\n\n`{command}`, then "
        f"`python -m backend.bench.wan_speed --report {results} --out {out}`. Random weights (speed does not depend "
        "on them), no decoding (null decoder); every step of a chunk, 4 denoise passes and the commit, plus its "
        "eviction. Speed-up (run): the full cache's time over the policy's for the whole run; (last chunk): at "
        "the last chunk.\n\n" + text + "\n\n![per-chunk latency](latency.png)\n"
    )
    return text


def _share(text: str) -> float | None:
    """'full' -> None; '1/4' or '0.25' -> 0.25 (a share of the full cache in (0, 1])."""
    if text == "full":
        return None
    num, _, den = text.partition("/")
    share = float(num) / float(den or 1)
    if not 0 < share <= 1:
        raise ValueError(text)
    return share


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m backend.bench.wan_speed", description=__doc__)
    ap.add_argument("--shape", default="proxy", choices=sorted(SHAPES))
    ap.add_argument("--frames", type=int, default=120, help="latent frames per run (default 120)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--minutes", type=float, default=60.0, help="stop starting new runs after this long")
    ap.add_argument("--out", default="out/wan_speed")
    ap.add_argument(
        "--runs", help="POLICY:SHARE,... e.g. pafu:1/4,window:0.125 (share 'full' for none; default: every run of RUNS)"
    )
    ap.add_argument("--report", metavar="JSONL", help="write the README and plot of a results file to --out")
    a = ap.parse_args(argv)
    if a.report:
        print(report(Path(a.report), Path(a.out)))
        return 0
    runs = RUNS
    if a.runs:
        try:
            runs = [(p, _share(s)) for p, s in (x.split(":") for x in a.runs.split(","))]
        except ValueError:
            ap.error(f"--runs takes POLICY:SHARE pairs such as pafu:1/4,window:0.125, got {a.runs!r}")
    run(a.shape, a.frames, Path(a.out), a.device, a.minutes, runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
