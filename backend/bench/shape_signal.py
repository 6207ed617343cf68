"""`python -m backend.bench binding --signal [--weights A.safetensors,B.safetensors]`: how much does a model's
denoiser follow the shape word? The fast, drawing-free probe of shape binding (seconds per model, where the
shape probe generates videos).

For each validation pair (training distribution, never the held-out set) whose first object has a colour of its
own, frame 0 is rendered twice: as prompted, and with the first object as another shape (same seed, so the same
place, size and colour). Both go through the autoencoder. At noise level t the same noisy latent x_t of the
prompted frame is denoised under both prompts; the model's clean estimates x0 = x_t - t v differ by
t (v_prompted - v_other). Where the two true frames differ (the object's tokens), the signal is

    ||x0_hat(prompted) - x0_hat(other)||^2 / ||x0(prompted) - x0(other)||^2,

0 when the shape word changes nothing, about 1 when the estimate moves as far as the true frames differ (at
high noise a perfect denoiser moves by nearly that much; at low noise x_t itself shows the shape, so it need not).
The loss columns are the flow-matching loss on those tokens under the right and the swapped prompt: a model
that uses the shape word does better with the right one. The autoencoder's shape share (pairs with two or more
objects) is ||x0(prompted) - x0(other)||^2 / ||x0(prompted) - x0(without the object)||^2: how much of the object's
latent energy is its shape, roughly the share of its loss the shape word can win. The first chunk attends only to
the prompt and itself, which is the bidirectional pass over one frame, so the same probe reads a student and a
teacher.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

LEVELS = (0.3, 0.5, 0.7, 0.9)


def other_shape(spec) -> str:
    """The first object's replacement: a shape no other object has (the world draws distinct shapes)."""
    from ..prompt import SHAPES

    used = {s for _, s in spec.objects}
    return next(s for s in SHAPES if s not in used) if len(used) < len(SHAPES) else spec.objects[1][1]


def pair_signal(model, ae, spec, seed: int, levels=LEVELS, noise_seed: int = 0) -> dict | None:
    """{t: (signal, loss right, loss swapped)} of one pair (see the module docstring), with "share": the
    autoencoder's shape share (None for one object); None when the two frames do not differ (the object hidden at
    frame 0)."""
    import torch

    from ..autoencoder import frames_to_tensor
    from ..world import make_clip

    colour = spec.objects[0][0]
    swapped = replace(spec, objects=((colour, other_shape(spec)),) + spec.objects[1:])
    with torch.no_grad():
        z = [ae.encode(frames_to_tensor(make_clip(s, seed, 1).frames))[None] for s in (spec, swapped)]  # (1,1,C,g,g)
        d_true = (z[0] - z[1]).pow(2).sum(2)[0, 0]  # (g, g)
        sel = d_true > 1e-3 * d_true.max().clamp_min(1e-12)
        if float(d_true.max()) < 1e-6:
            return None
        share = None
        if len(spec.objects) > 1:
            z_gone = ae.encode(frames_to_tensor(make_clip(replace(spec, objects=spec.objects[1:]), seed, 1).frames))
            share = float((z[0] - z[1]).pow(2).sum() / (z[0][0] - z_gone).pow(2).sum().clamp_min(1e-12))
        toks = [torch.tensor([s.tokens()]) for s in (spec, swapped)]
        gen = torch.Generator().manual_seed(noise_seed)
        out = {"share": share}
        for t in levels:
            eps = torch.randn(z[0].shape, generator=gen)
            xt = (1 - t) * z[0] + t * eps
            tt = torch.full((1, 1), float(t))
            v = [model.bidirectional(k, xt, tt) for k in toks]
            target = eps - z[0]
            moved = (t * t * (v[0] - v[1]).pow(2).sum(2)[0, 0][sel]).sum() / d_true[sel].sum()
            losses = [float((vi - target).pow(2).sum(2)[0, 0][sel].mean()) for vi in v]
            out[t] = (float(moved), *losses)
    return out


def measure(weights: str, prompts: int = 48) -> dict:
    """Mean signal and losses per noise level over the validation pairs, with the pair count."""
    from ..loading import student_and_ae
    from .binding import probe_pairs

    model, ae = student_and_ae(str(weights))  # with the autoencoder beside the weights, else the shipped one
    rows = []  # (object count, pair result)
    for spec, seed in probe_pairs(prompts):
        r = pair_signal(model, ae, spec, seed)
        if r is not None:
            rows.append((len(spec.objects), r))
    cols = ("signal", "loss_right", "loss_swapped")

    def table(sel):
        return {str(t): {k: float(np.mean([r[t][i] for r in sel])) for i, k in enumerate(cols)} for t in LEVELS}

    # one object needs no binding (the only object slot names the shape): a model weak there cannot draw the
    # shape at all; weak only with several objects, it cannot tell which slot a sprite is
    counts = sorted({n for n, _ in rows})
    by_count = {
        str(n): {"pairs": sum(m == n for m, _ in rows), "signal": table([r for m, r in rows if m == n])} for n in counts
    }
    shares = [r["share"] for _, r in rows if r["share"] is not None]
    return {
        "weights": weights,
        "pairs": len(rows),
        "levels": table([r for _, r in rows]),
        "by_objects": by_count,
        "shape_share": {"mean": float(np.mean(shares)), "pairs": len(shares)} if shares else None,
    }


def render(results: list[dict], prompts: int) -> str:
    names = ",".join(r["weights"] for r in results)
    lines = [
        "# Does the denoiser follow the shape word? (validation pairs, frame 0)",
        "",
        f"`python -m backend.bench binding --signal --prompts {prompts} --weights {names}`: the model's clean estimate "
        "under the prompted and a swapped shape, as a share of how far the true frames differ (0 = the shape word "
        "changes nothing); flow-matching loss on the object's tokens under the right and the swapped prompt "
        "(latent units, summed over channels). See `backend/bench/shape_signal.py`.",
        "",
        "| weights | pairs | t | signal | loss, right shape | loss, swapped shape |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        for t, row in r["levels"].items():
            lines.append(
                f"| {r['weights']} | {r['pairs']} | {t} | {row['signal']:.3f} | {row['loss_right']:.3f} | "
                f"{row['loss_swapped']:.3f} |"
            )
    lines += [
        "",
        "By the prompt's object count (one object needs no binding: its slot is the only one naming a shape):",
        "",
        "| weights | objects | pairs | " + " | ".join(f"signal t = {t}" for t in LEVELS) + " |",
        "|---|---|---|" + "---|" * len(LEVELS),
    ]
    for r in results:
        for n, row in r["by_objects"].items():
            cells = " | ".join(f"{row['signal'][str(t)]['signal']:.3f}" for t in LEVELS)
            lines.append(f"| {r['weights']} | {n} | {row['pairs']} | {cells} |")
    lines += [
        "",
        "The autoencoder beside each weights file: how much of an object's latent energy is its shape (pairs with two "
        "or more objects; the object removed for the denominator):",
        "",
        "| weights | shape share | pairs |",
        "|---|---|---|",
    ]
    for r in results:
        if r.get("shape_share"):
            lines.append(f"| {r['weights']} | {r['shape_share']['mean']:.3f} | {r['shape_share']['pairs']} |")
    return "\n".join(lines) + "\n"


def run(weights: str | None, prompts: int = 48, out: str = "docs/results/binding") -> str:
    """The signal of each comma-separated weights file (default the shipped student), written to out/."""
    from ..loading import DEFAULT_MODEL

    names = (weights or str(DEFAULT_MODEL.relative_to(DEFAULT_MODEL.parents[2]))).split(",")
    results = [measure(w, prompts) for w in names]
    text = render(results, prompts)
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "shape_signal.md").write_text(text)
    (Path(out) / "shape_signal.json").write_text(json.dumps(results, indent=1))
    print(text)
    return text
