"""`python -m backend.bench binding [--prompts 24] [--frames 36] [--out docs/results/binding]`: per prompted
object, is its colour and shape right at frame 0 and 32 frames later? On validation pairs (the training
distribution, never the held-out set), for two sources on the same pair:

- `autoencoder`: the world's ground-truth frames through the shipped autoencoder (encode, decode): what the
  latent space can carry at all;
- `generated`: the shipped student with the full cache and the shipped sampler (its own video of the prompt).

Each prompted object, at each frame where the ground truth shows it whole (not cut by the wall or the frame
edge), is one of: `right` (a whole sprite of its shape and colour; an open colour: any colour the prompt does
not name), `wrong shape` (its colour as a whole sprite of another shape), `wrong colour` (its shape, another
colour), `partial` (only a cut blob of its colour), `missing`. `extra sprites / frame`: sprites beyond the
prompt's count (the evaluator's `extra_objects`). Detection is the evaluator's (`backend.consistency.detect`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

OUTCOMES = ("right", "wrong shape", "wrong colour", "partial", "missing")
WINDOWS = {"frame 0": (0, 1), "frames 0-3": (0, 4), "frames 32-35": (32, 36)}


def outcome(dets, colour: str | None, shape: str, fixed: set[str], open_colour: str | None) -> str:
    """What a frame's detections `dets` make of one prompted object (see the module docstring)."""
    from ..consistency import whole_match

    whole = [d for d in dets if d.shape is not None]
    if any(whole_match(d, colour, shape, fixed) for d in whole):
        return "right"
    want = colour or open_colour
    if want and any(d.colour == want for d in whole):
        return "wrong shape"
    if any(d.shape == shape for d in whole):
        return "wrong colour"
    if want and any(d.colour == want for d in dets):
        return "partial"
    return "missing"


def extras(dets, spec) -> int:
    """Sprites beyond the prompt's count (whole or cut): the evaluator's `extra_objects` for one frame."""
    return max(len(dets) - len(spec.objects), 0)


def check_frames(frames: int) -> None:
    if frames < 36:
        raise ValueError(f"--frames must be at least 36 (the last window is frames 32-35), got {frames}")


def sources(spec, seed: int, frames: int, model, ae, sampler=None) -> tuple[np.ndarray, dict]:
    """(ground-truth frames, {source: frames}): the world's clip through the autoencoder, and the model's own
    video of the prompt (same seed)."""
    import torch

    from ..autoencoder import frames_to_tensor
    from ..world import make_clip
    from .model import run_to_end

    gt = make_clip(spec, seed, frames).frames
    with torch.no_grad():
        rec = ae.decode_frames(ae.encode(frames_to_tensor(gt)), 0)[0]
    return gt, {"autoencoder": rec, "generated": run_to_end(model, ae, spec.text(), frames, seed, None, sampler).frames}


def score_pair(prompt: str, seed: int, frames: int, model, ae, sampler=None) -> dict:
    """Per source, per object slot: outcome counts per window, and extra sprites per frame."""
    from ..consistency import detect, first_identities
    from ..prompt import parse

    spec = parse(prompt)
    gt, videos = sources(spec, seed, frames, model, ae, sampler)
    fixed = {c for c, _ in spec.objects if c is not None}
    gt_dets = [detect(f) for f in gt]
    out = {}
    for source, video in videos.items():
        dets = [detect(f) for f in video]
        idents = first_identities(dets, spec)
        per = {}
        for j, ((colour, shape), (icol, _)) in enumerate(zip(spec.objects, idents)):
            for w, (a, b) in WINDOWS.items():
                counts = per.setdefault(f"{w}|{j}|{'open' if colour is None else 'fixed'}", dict.fromkeys(OUTCOMES, 0))
                for t in range(a, min(b, frames)):
                    if outcome(gt_dets[t], colour, shape, fixed, None if colour is None else colour) != "right":
                        continue  # the ground truth does not show it whole here (wall, edge)
                    counts[outcome(dets[t], colour, shape, fixed, icol)] += 1
        out[source] = {"objects": per, "extra": [extras(d, spec) for d in dets]}
    return out


def summarise(results: list[dict]) -> dict:
    """Outcome shares per source and window (all objects), per slot and per open/fixed colour at frame 0."""
    table = {}
    for source in ("autoencoder", "generated"):
        for key_of in (  # every object; by slot at frame 0; by open / fixed colour at frame 0 and 32-35
            lambda w, j, o: w,
            lambda w, j, o: f"{w} · object {int(j) + 1}" if w == "frame 0" else None,
            lambda w, j, o: f"{w} · colour {o}" if w in ("frame 0", "frames 32-35") else None,
        ):
            for r in results:
                for k, counts in r[source]["objects"].items():
                    row = key_of(*k.split("|"))
                    if row is None:
                        continue
                    acc = table.setdefault((source, row), dict.fromkeys(OUTCOMES, 0))
                    for o, n in counts.items():
                        acc[o] += n
    extra = {
        s: {w: float(np.mean([np.mean(r[s]["extra"][a:b]) for r in results])) for w, (a, b) in WINDOWS.items()}
        for s in ("autoencoder", "generated")
    }
    return {"table": {f"{s}|{row}": c for (s, row), c in table.items()}, "extra": extra}


def render(summary: dict, n_pairs: int, frames: int, setting: str = "") -> str:
    lines = [
        "# Per-object binding of the shipped student (validation pairs)",
        "",
        f"`python -m backend.bench binding --prompts {n_pairs} --frames {frames}{setting}`: {n_pairs} validation pairs "
        "(training distribution, not the held-out set), each object counted at every frame of the window where the "
        "ground truth shows it whole. `autoencoder`: the ground-truth frames encoded and decoded by the shipped "
        "autoencoder; `generated`: the shipped student, full cache, shipped sampler.",
        "",
        "| source | window | objects x frames | " + " | ".join(OUTCOMES) + " | extra sprites / frame |",
        "|---|---|---|" + "---|" * (len(OUTCOMES) + 1),
    ]
    for key, counts in summary["table"].items():
        source, row = key.split("|")
        n = sum(counts.values())
        shares = " | ".join(f"{counts[o] / n:.2f}" if n else "-" for o in OUTCOMES)
        ex = summary["extra"][source].get(row, None)
        lines.append(f"| {source} | {row} | {n} | {shares} | {'' if ex is None else f'{ex:.2f}'} |")
    return "\n".join(lines) + "\n"


def sampler_setting(sampler) -> tuple[dict, str]:
    """The fields of `sampler` (a SamplerConfig or None) that differ from the shipped sampler, and their flags."""
    from ..config import SamplerConfig

    changed = {} if sampler is None else {k: v for k, v in sampler.__dict__.items() if getattr(SamplerConfig(), k) != v}
    return changed, "".join(f" --sampler {k}={v}" for k, v in changed.items())


def run(prompts: int = 24, frames: int = 36, out: str = "docs/results/binding", sampler=None) -> dict:
    """`sampler`: the SamplerConfig of the generated videos (None: the shipped one)."""
    from ..loading import shipped
    from .validation import validation_pairs

    check_frames(frames)
    model, ae = shipped()
    pairs = validation_pairs(prompts)
    results = [score_pair(p, s, frames, model, ae, sampler) for p, s in tqdm(pairs, desc="pairs")]
    summary = summarise(results)
    changed, setting = sampler_setting(sampler)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"pairs": pairs, "sampler": changed, "summary": summary, "results": results}
    (out / "binding.json").write_text(json.dumps(doc, indent=1))
    (out / "README.md").write_text(render(summary, prompts, frames, setting))
    print(render(summary, prompts, frames, setting))
    return summary


def pair_shares(result: dict, window: str) -> tuple[float, float]:
    """One pair's generated video in `window`: (share of object frames right, extra sprites per frame)."""
    counts = [c for k, c in result["generated"]["objects"].items() if k.startswith(window + "|")]
    n = sum(sum(c.values()) for c in counts)
    right = sum(c["right"] for c in counts) / n if n else float("nan")
    a, b = WINDOWS[window]
    return right, float(np.mean(result["generated"]["extra"][a:b]))


def paired(base: dict, other: dict) -> str:
    """Markdown: per window, `other` minus `base` on the same pairs (right share, extra sprites per frame),
    mean and 95% CI over pairs. Both are binding.json documents."""
    from .report import mean_ci, paired_cell

    if [tuple(p) for p in base["pairs"]] != [tuple(p) for p in other["pairs"]]:
        raise ValueError("paired comparison needs the same pairs (same --prompts)")
    lines = ["| window | right (paired diff.) | extra sprites / frame (paired diff.) |", "|---|---|---|"]
    for w in WINDOWS:
        d = np.array(
            [np.subtract(pair_shares(o, w), pair_shares(b, w)) for b, o in zip(base["results"], other["results"])]
        )
        cells = []
        for col in d.T:
            ok = col[~np.isnan(col)]
            m, ci = mean_ci(ok)
            cells.append(paired_cell((m, ci, len(ok))))
        lines.append(f"| {w} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def probe_pairs(prompts: int) -> list:
    """(spec, seed) of the first `prompts` validation pairs whose first object has a colour of its own (named, and
    no other object's): the pairs both shape probes re-write."""
    from ..prompt import parse
    from .validation import validation_pairs

    specs = [(parse(p), s) for p, s in validation_pairs(prompts)]
    return [(sp, s) for sp, s in specs if sp.objects[0][0] and sum(c == sp.objects[0][0] for c, _ in sp.objects) == 1]


def shape_probe(
    prompts: int = 24, frames: int = 4, out: str = "docs/results/binding", weights=None, sampler=None
) -> str:
    """Does the shape word steer the drawing? For every validation pair whose first object has a colour of its
    own, the prompt is re-written with that object as each of the three shapes (same seed and noise) and the
    whole sprites of its colour in the first `frames` frames are counted by drawn shape: a confusion matrix of
    prompted against drawn shape, for the generated video and for the ground truth through the autoencoder.
    `weights`: the generating model (default the shipped student; the teacher's weights draw the first chunk as
    it does, bidirectionally within the chunk); `sampler`: the SamplerConfig of the generated videos."""
    from dataclasses import replace

    from ..consistency import SHAPES, detect
    from ..loading import shipped, student_and_ae

    # the weights with the autoencoder beside them (a training run's models folder), else the shipped one
    model, ae = shipped() if weights is None else student_and_ae(str(weights))
    conf = {src: np.zeros((len(SHAPES), len(SHAPES)), int) for src in ("autoencoder", "generated")}
    used = 0
    for spec, seed in tqdm(probe_pairs(prompts), desc="pairs"):
        colour = spec.objects[0][0]
        used += 1
        for i, shape in enumerate(SHAPES):
            s = replace(spec, objects=((colour, shape),) + spec.objects[1:])
            for src, video in sources(s, seed, frames, model, ae, sampler)[1].items():
                for f in video:
                    for d in detect(f):
                        if d.colour == colour and d.shape is not None:
                            conf[src][i, SHAPES.index(d.shape)] += 1
    lines = [
        "# Does the shape word steer the drawing? (validation pairs)",
        "",
        f"`python -m backend.bench binding --shape-probe --prompts {prompts} --frames {frames}"
        + (f" --weights {weights}" if weights else "")
        + sampler_setting(sampler)[1]
        + f"`: {used} validation pairs whose first "
        f"object has a colour of its own, re-written with that object as each shape (same seed and noise); whole "
        f"sprites of its colour in frames 0-{frames - 1}, by drawn shape (share of the row).",
        "",
    ]
    for src, m in conf.items():
        head = "| prompted \\ drawn | " + " | ".join(SHAPES) + " | sprites |"
        lines += [f"**{src}**", "", head, "|---|" + "---|" * 4]
        for i, shape in enumerate(SHAPES):
            n = m[i].sum()
            lines.append(f"| {shape} | " + " | ".join(f"{v / n:.2f}" if n else "-" for v in m[i]) + f" | {n} |")
        lines.append("")
    text = "\n".join(lines)
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "shape_probe.md").write_text(text)
    (Path(out) / "shape_probe.json").write_text(json.dumps({k: v.tolist() for k, v in conf.items()} | {"pairs": used}))
    print(text)
    return text
