"""`python -m backend.bench model|sampler|weights|first|decoder|context|policies|behaviour|engines|binding`: the
project's benchmark scripts (current numbers in docs/results/, the studies behind the defaults in docs/decisions/).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def sweep_args(p: argparse.ArgumentParser, prompts: int, frames: int | None = 96) -> None:
    """--prompts, --frames (unless None), --workers and --out: the arguments every validation sweep takes."""
    p.add_argument("--prompts", type=int, default=prompts)
    if frames is not None:
        p.add_argument("--frames", type=int, default=frames)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default="docs/decisions")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m backend.bench", description=__doc__)
    sub = ap.add_subparsers(dest="what", required=True)
    m = sub.add_parser("model", help="quality on the held-out set and speed of the shipped model")
    m.add_argument("--prompts", type=int, default=32, help="held-out pairs to evaluate (default all 32)")
    m.add_argument("--workers", type=int, default=2, help="parallel processes for the quality sweep")
    m.add_argument("--full-frames", type=int, default=256)
    m.add_argument("--window-frames", type=int, default=128)
    m.add_argument("--out", default="docs/results")
    m.add_argument(
        "--skip-speed",
        action="store_true",
        help="keep the speed section of an existing model.json in --out if it measured the same weights",
    )
    m.add_argument(
        "--skip-quality",
        action="store_true",
        help="keep the quality section of an existing model.json in --out if it measured the same weights",
    )
    sm = sub.add_parser("sampler", help="compare sampler settings on validation prompts (not the held-out set)")
    sweep_args(sm, prompts=24)
    sm.add_argument(
        "--setting",
        action="append",
        metavar="'LABEL: KEY=VALUE ...'",
        help="a sampler setting to compare (repeat; fields of backend.config.SamplerConfig, the rest "
        "as shipped), e.g. --setting 'no guidance: guidance=1 first_guidance=1'; default: the sweep "
        "that chose the shipped sampler",
    )
    wp = sub.add_parser("weights", help="compare student weights files on validation prompts (which weights ship)")
    wp.add_argument("paths", nargs="+", help="student .safetensors files (e.g. the shipped one and a candidate)")
    sweep_args(wp, prompts=24)
    fp = sub.add_parser(
        "first", help="the first frame: generated, and denoised from the re-noised ground truth (validation prompts)"
    )
    fp.add_argument("paths", nargs="*", help="student .safetensors files (default: the shipped one)")
    sweep_args(fp, prompts=48, frames=None)
    fp.add_argument(
        "--rerender",
        metavar="FILE.json",
        help="only redraw the markdown beside a stored first_frame.json (no weights needed)",
    )
    dp = sub.add_parser("decoder", help="compare autoencoder decoders on the same latents (validation prompts)")
    dp.add_argument(
        "paths",
        nargs="+",
        help="autoencoder .safetensors files with the same encoder (e.g. the shipped one and a decoder fine-tune)",
    )
    sweep_args(dp, prompts=24)
    cp = sub.add_parser(
        "context",
        help="windows of growing length and the full cache on the same videos: "
        "where near-blank frames (collapse) start",
    )
    cp.add_argument("--pair", action="append", default=[], metavar="'PROMPT@SEED'", help="a video (repeat)")
    cp.add_argument(
        "--validation",
        type=int,
        default=0,
        metavar="N",
        help="also the first N validation pairs (training distribution), filtered by --contains",
    )
    cp.add_argument("--contains", default="", help="keep validation prompts containing every one of these words")
    cp.add_argument("--frames", type=int, default=256)
    cp.add_argument(
        "--windows",
        default=",".join(map(str, __import__("backend.bench.context", fromlist=["x"]).WINDOWS)),
        help="window lengths in frames",
    )
    cp.add_argument("--workers", type=int, default=2)
    cp.add_argument("--out", default="docs/results/context_probe")
    pp = sub.add_parser("policies", help="policies x budgets against the full-cache reference (held-out prompts)")
    pp.add_argument(
        "--prompts", type=int, default=8, help="held-out pairs (default 8 of 32; all 32 takes hours on CPU)"
    )
    pp.add_argument("--frames", type=int, default=256)
    pp.add_argument(
        "--policies", default=",".join(__import__("backend.bench.policies", fromlist=["x"]).DEFAULT_POLICIES)
    )
    pp.add_argument("--shares", default="0.0625,0.125,0.25,0.5", help="budgets as shares of the full cache")
    pp.add_argument("--workers", type=int, default=2)
    pp.add_argument(
        "--split",
        default="heldout",
        choices=__import__("backend.bench.policies", fromlist=["x"]).SPLITS,
        help="held-out pairs (reported numbers) or validation pairs (for design choices)",
    )
    pp.add_argument("--out", default="docs/results/policies")
    pp.add_argument(
        "--sampler",
        action="append",
        metavar="KEY=VALUE",
        help="sampler setting for every rollout (fields of backend.config.SamplerConfig; default: the "
        "shipped sampler), e.g. --sampler guidance=1 --sampler first_guidance=1",
    )
    pp.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="run on Ray: 'local' (a single-node cluster here), 'auto' or ray://host:port (needs `pip install ray`)",
    )
    bp = sub.add_parser(
        "behaviour",
        help="digests of the frames every registered policy draws (1/8 and 1/4, two "
        "prompts, 32 frames): record a fixture or check the engine against it",
    )
    bp.add_argument("--write", metavar="FILE", help="record the fixture (e.g. tests/fixtures/behaviour.json)")
    bp.add_argument("--check", metavar="FILE", help="re-run and name every run whose frames differ")
    ep = sub.add_parser(
        "engines",
        help="efficiency of this engine against another checkout's (e.g. the commit "
        "before a refactor), the same jobs alternating in one run",
    )
    ep.add_argument("--base", required=True, help="the other engine's checkout (e.g. a git worktree)")
    ep.add_argument("--prompts", type=int, default=3, help="held-out pairs (default 3)")
    ep.add_argument("--frames", type=int, default=256)
    ep.add_argument("--policies", default="pafu,window,sink,h2o,tova,snapkv,flowcache,packcache,tempcache,deep_forcing")
    ep.add_argument("--shares", default="0.125", help="budgets as shares of the full cache")
    ep.add_argument("--workers", type=int, default=2)
    ep.add_argument("--out", default="docs/results/engines")
    bd = sub.add_parser(
        "binding", help="per prompted object: colour and shape right at frame 0 and 32 frames later (validation)"
    )
    bd.add_argument("--prompts", type=int, default=24)
    bd.add_argument("--frames", type=int, default=None, help="frames per video (default 36; the shape probe 4)")
    bd.add_argument("--out", default="docs/results/binding")
    bd.add_argument(
        "--shape-probe",
        action="store_true",
        help="instead: re-write each pair's first object as each shape and count the shapes drawn (confusion)",
    )
    bd.add_argument(
        "--signal",
        action="store_true",
        help="instead: how far the denoiser's frame-0 estimate follows the shape word (no video generated; fast)",
    )
    bd.add_argument(
        "--weights",
        default=None,
        help="shape probe / signal: the model's weights (default: the shipped student; the signal takes a "
        "comma-separated list)",
    )
    bd.add_argument(
        "--sampler",
        action="append",
        metavar="KEY=VALUE",
        help="sampler setting of the generated videos (fields of backend.config.SamplerConfig; default: the "
        "shipped sampler), e.g. --sampler first_guidance=1",
    )
    a = ap.parse_args(argv)
    try:  # bad input is reported in one line before any work starts
        job = _prepare(a)
    except (ValueError, KeyError, FileNotFoundError) as e:
        ap.exit(2, f"error: {e.args[0] if isinstance(e, KeyError) and e.args else e}\n")
    job()


def _prepare(a):
    """Parse and check the arguments of `a.what`; -> the benchmark to run, as a zero-argument callable."""
    from functools import partial

    from ..flow import sampler_config

    if a.what == "binding":
        from .binding import check_frames
        from .binding import run as run_binding

        if a.shape_probe and a.signal:
            raise ValueError("--shape-probe and --signal are two probes: choose one")
        if a.signal:
            from .shape_signal import run as run_signal

            if a.frames is not None or a.sampler:
                raise ValueError("--signal reads frame 0 without sampling: --frames and --sampler do not apply")
            return partial(run_signal, a.weights, a.prompts, a.out)
        if a.shape_probe:
            from .binding import shape_probe

            return partial(shape_probe, a.prompts, a.frames or 4, a.out, a.weights, sampler_config(a.sampler))
        if a.weights:
            raise ValueError("--weights applies to the shape probe (--shape-probe) and the signal (--signal)")
        a.frames = 36 if a.frames is None else a.frames
        check_frames(a.frames)
        return partial(run_binding, a.prompts, a.frames, a.out, sampler_config(a.sampler))
    if a.what == "model":
        from .model import run

        return partial(run, a.prompts, a.workers, a.full_frames, a.window_frames, a.out, a.skip_speed, a.skip_quality)
    if a.what == "policies":
        from .policies import check_specs
        from .policies import run as run_policies

        policies = tuple(a.policies.split(","))
        try:
            shares = tuple(float(x) for x in a.shares.split(","))
        except ValueError:
            raise ValueError(f"--shares expects comma-separated numbers, got {a.shares!r}") from None
        check_specs(policies, shares)
        return partial(
            run_policies,
            a.prompts,
            a.frames,
            policies,
            shares,
            a.workers,
            a.out,
            ray_address=a.ray,
            split=a.split,
            sampler=sampler_config(a.sampler),
        )
    if a.what == "engines":
        from .engines import run as run_engines
        from .policies import check_specs

        if not (Path(a.base) / "backend" / "stepper.py").is_file():
            raise FileNotFoundError(f"--base {a.base} is not a checkout of this project (no backend/stepper.py)")
        policies = tuple(a.policies.split(","))
        shares = tuple(float(x) for x in a.shares.split(","))
        check_specs(policies, shares)
        return partial(run_engines, a.base, a.prompts, a.frames, policies, shares, a.workers, a.out)
    if a.what == "behaviour":
        from .behaviour import main as behaviour

        if not (a.write or a.check):
            raise ValueError("give --write FILE or --check FILE")
        return lambda: exit(behaviour(a.write, a.check))
    if a.what == "weights":
        from .weights import check_paths
        from .weights import run as run_weights

        check_paths(a.paths)
        return partial(run_weights, a.paths, a.prompts, a.frames, a.workers, a.out)
    if a.what == "first":
        from .first import rerender
        from .first import run as run_first
        from .weights import check_paths

        if a.rerender:
            if not os.path.isfile(a.rerender):
                raise FileNotFoundError(f"no stored first-frame results at {a.rerender}")
            return partial(rerender, a.rerender)
        check_paths(a.paths)
        return partial(run_first, a.paths, a.prompts, a.workers, a.out)
    if a.what == "decoder":
        from .decoder import check_autoencoders
        from .decoder import run as run_decoder

        check_autoencoders(a.paths)
        return partial(run_decoder, a.paths, a.prompts, a.frames, a.workers, a.out)
    if a.what == "context":
        from ..stepper import validate_frames
        from .context import parse_pair
        from .context import run as run_context
        from .validation import validation_pairs

        validate_frames(a.frames)
        pairs = [parse_pair(t) for t in a.pair]
        words = a.contains.split()
        pairs += [(p, s) for p, s in validation_pairs(a.validation) if all(w in p.split() for w in words)]
        if not pairs:
            raise ValueError("no videos: give --pair 'PROMPT@SEED' or --validation N (with --contains matching some)")
        windows = tuple(int(w) for w in a.windows.split(",") if w.strip())
        if not windows or min(windows) < 1:
            raise ValueError(f"--windows expects positive frame counts, got {a.windows!r}")
        return partial(run_context, pairs, a.frames, windows, a.workers, a.out)
    from .sampler import parse_setting
    from .sampler import run as run_sampler

    settings = dict(parse_setting(t) for t in a.setting) if a.setting else None
    return partial(run_sampler, a.prompts, a.frames, a.workers, a.out, settings)


if __name__ == "__main__":
    main()
