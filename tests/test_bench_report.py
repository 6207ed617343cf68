"""The policy benchmark's statistics: Student-t intervals and the paired PaFu-KV-minus-heuristic comparison."""

import math

import numpy as np
import pytest

from backend.bench.report import HEADLINE, markdown, mean_ci, paired, summarise, variants
from backend.bench.spec import SCORES

FRAMES = 48


def fake_run(policy, pair, share, adherence, psnr, identity=None):
    scores = {s: 0.5 for s in SCORES}
    scores.update(adherence=adherence, identity_persistence=identity)
    return {
        "pair": pair,
        "policy": policy,
        "share": share,
        "scores": scores,
        "psnr": [psnr] * FRAMES,
        "ssim": [0.9] * FRAMES,
        "frame_ms": [10.0] * FRAMES,
        "total_s": 1.0,
        "peak_kv_bytes": 2**20,
        "evict_ms_mean": 0.1,
        "chunk_ms_mean": 10.0,
        "head_ms_total": 0.0,
    }


def test_mean_ci_uses_student_t():
    v = [1.0, 2.0, 4.0, 3.0, 6.0, 5.0]
    m, ci = mean_ci(v)
    assert m == 3.5
    assert math.isclose(ci, 2.571 * np.std(v, ddof=1) / math.sqrt(6), rel_tol=1e-9)
    assert math.isnan(mean_ci([1.0])[1]) and math.isnan(mean_ci([None, float("nan")])[0])


def test_paired_difference_sees_a_consistent_gain_the_unpaired_cis_hide():
    # prompts differ a lot (0.1 .. 0.9); pafu is 0.05 above tova on every one, and 0.05 below window on psnr
    base = np.linspace(0.1, 0.9, 8)
    results = [
        {
            "pair": i,
            "policy": "full",
            "share": None,
            "scores": {s: 0.5 for s in SCORES},
            "total_s": 2.0,
            "peak_kv_bytes": 2**21,
        }
        for i in range(8)
    ]
    for i, b in enumerate(base):
        results += [
            fake_run("pafu", i, 0.125, b + 0.05, 20 + 10 * b, identity=None if i % 2 else b),
            fake_run("tova", i, 0.125, b, 20 + 10 * b, identity=None if i % 2 else b - 0.01 * i),
            fake_run("window", i, 0.125, b + 0.05, 20.05 + 10 * b),
            fake_run("random", i, 0.125, 1.0, 40.0),
        ]  # a bound: never a rival
    rep = summarise(results, FRAMES)
    rows = {r["rival"]: r for r in rep["paired"]}
    assert set(rows) == {"tova", "window"}
    m, ci, n = rows["tova"]["adherence"]
    assert math.isclose(m, 0.05, abs_tol=1e-12) and ci < 1e-9 and n == 8
    assert rows["tova"]["identity_persistence"][2] == 4  # only prompts where both are defined
    assert rows["window"]["psnr"][0] < 0 and rows["window"]["psnr"][0] + rows["window"]["psnr"][1] < 0
    # unpaired, the same gain is inside the overlap of the two CIs
    by = {(r["policy"], r["share"]): r for r in rep["rows"]}
    (a, ac), (b, bc) = by["pafu", 0.125]["adherence"], by["tova", 0.125]["adherence"]
    assert a - b < ac + bc
    text = markdown(rep)
    assert "Paired differences" in text and "is significantly below window on psnr" in text
    assert "significantly above tova on adherence" in text
    assert all(k in text for k in HEADLINE)


def test_paired_is_empty_without_the_method():
    results = [fake_run("tova", 0, 0.125, 0.5, 20.0), fake_run("window", 0, 0.125, 0.5, 20.0)]
    assert paired(results, FRAMES) == []


def test_variants_are_paired_with_their_policy_at_default_settings():
    """'h2o:probe=0.125' minus 'h2o' on the same prompts, per budget; a variant whose base did not run at that
    budget, and a policy's default run, get no row."""
    base = np.linspace(0.1, 0.9, 6)
    results = []
    for i, b in enumerate(base):
        results += [
            fake_run("h2o", i, 0.125, b, 20 + 10 * b),
            fake_run("h2o:probe=0.125", i, 0.125, b - 0.02, 19 + 10 * b),
            fake_run("h2o:probe=0.125", i, 0.25, b, 20.0),
            fake_run("pafu", i, 0.125, b, 20.0),
        ]
    rows = variants(results, FRAMES)
    assert [(r["variant"], r["base"], r["share"]) for r in rows] == [("h2o:probe=0.125", "h2o", 0.125)]
    assert math.isclose(rows[0]["adherence"][0], -0.02, abs_tol=1e-12) and rows[0]["adherence"][2] == 6
    assert math.isclose(rows[0]["psnr"][0], -1.0, abs_tol=1e-9)
    text = markdown(summarise(results, FRAMES))
    assert "Variants minus the same policy" in text and "| 1/8 | h2o:probe=0.125 | -1.000 ± 0.000 ▼ (n=6)" in text


def test_validation_sweep_pairs_each_variant_with_the_first():
    from backend.bench.validation import RUNS, paired, paired_lines, table

    def res(adh, ident):
        return [
            {
                k: {"adherence": a, "identity_persistence": i, "landmark_revisit": 0.5, "extra_objects": 0.0}
                for k in RUNS
            }
            | {"ms": 10.0}
            for a, i in zip(adh, ident)
        ]

    # the candidate is 0.05 better on every pair: hidden by the between-pair spread, found by pairing
    base = res([0.1, 0.5, 0.9, 0.3], [None, 0.2, 0.4, 0.6])
    cand = res([0.15, 0.55, 0.95, 0.35], [0.9, 0.3, 0.5, float("nan")])
    tab = table({"base": base, "cand": cand}, ("adherence",))
    m, ci = tab["cand"]["full_2x"]["adherence"]
    assert ci > 0.05  # unpaired: the CI spans the gain
    d = paired({"base": base, "cand": cand})["cand"]["full_2x"]
    assert math.isclose(d["adherence"][0], 0.05) and d["adherence"][1] < 1e-9 and d["adherence"][2] == 4
    assert (
        math.isclose(d["identity_persistence"][0], 0.1) and d["identity_persistence"][2] == 2
    )  # undefined pairs skipped
    assert "▲" in "\n".join(paired_lines({"cand": {k: d for k in RUNS}}, "base", 96))


def test_model_bench_keeps_a_skipped_section_only_for_the_same_weights(tmp_path):
    import json

    from backend.bench.model import kept_sections
    from backend.bench.model import markdown as model_markdown

    old = {
        "model_hash": "aa",
        "ae_hash": "bb",
        "date": "2026-11-01 10:00",
        "quality": {"q": 1},
        "per_prompt": [1],
        "speed": {"s": 2},
    }
    path = tmp_path / "model.json"
    path.write_text(json.dumps(old))
    new = {"model_hash": "aa", "ae_hash": "bb", "date": "2026-11-24 05:00"}
    kept = kept_sections(path, new, {"quality"})
    assert kept == {"quality": {"q": 1}, "quality_date": "2026-11-01 10:00", "per_prompt": [1]}
    assert kept_sections(path, {**new, "model_hash": "other"}, {"quality"}) == {}  # other weights: dropped
    assert kept_sections(path, new, set()) == {}
    path.write_text("{not json")
    assert kept_sections(path, new, {"quality", "speed"}) == {}  # corrupt: ignored
    head = model_markdown(
        {**new, "quality_date": "2026-11-01 10:00", "dataset_contrast": [1.0, 2.0], "model": "student.safetensors"}
    ).splitlines()[0]
    assert head == "# Model benchmark (2026-11-24 05:00; quality measured 2026-11-01 10:00)"


def test_model_bench_scores_the_first_frame_when_every_pair_has_it():
    """The held-out report's frame-0 row (prompt-only generation) aggregates only pair results that scored it;
    results cached before it existed leave the row out instead of failing, and undefined scores read n/a."""
    from backend.bench.model import SCORES, summarise
    from backend.bench.model import markdown as model_markdown

    def pair(i, first=True):
        s = {k: float(i) / 10 for k in SCORES} | {"identity_persistence": float("nan")}
        r = {
            "prompt": "a red circle on plain blue",
            "seed": i,
            "full_2x": s,
            "full_all": s,
            "window": s,
            "full_segments": [s],
            "contrast_full": [10.0],
            "contrast_window": [11.0],
        }
        return r | ({"full_first": s} if first else {})

    q = summarise([pair(1), pair(3)])
    assert math.isclose(q["full_first"]["adherence"]["mean"], 0.2) and q["full_first"]["identity_persistence"]["n"] == 0
    assert "full_first" not in summarise([pair(1), pair(3, first=False)])
    text = model_markdown(
        {"model": "s", "model_hash": "a", "ae_hash": "b", "date": "d", "dataset_contrast": [1.0, 2.0], "quality": q}
    )
    row = next(line for line in text.splitlines() if line.startswith("| full cache, frame 0"))
    assert "0.200 ± " in row and "n/a" in row


def test_first_frame_bench_scores_references_and_the_shipped_student(tmp_path):
    """`bench first`: a ground-truth frame scores whole and clean, a blank one finds nothing; every start level
    is one of the first chunk's own levels at or below the asked one; a run writes the references once, as
    their own group, and one row per start level for each weights file."""
    import json

    from backend.bench.first import LEVELS, REFERENCES, frame_scores, rerender, run, start_levels
    from backend.flow import timesteps
    from backend.prompt import parse
    from backend.world import make_clip

    spec = parse("a red circle and a blue square on plain green")
    gt = make_clip(spec, 3, 1).frames[0]
    assert frame_scores(gt, spec) == {"whole": 1.0, "adherence": 1.0, "extra_objects": 0.0}
    blank = np.zeros_like(gt)
    assert frame_scores(blank, spec) == {"whole": 0.0, "adherence": 0.0, "extra_objects": 0.0}
    ts = timesteps(__import__("backend.config", fromlist=["x"]).SamplerConfig(), first_chunk=True).tolist()
    assert start_levels(1.0) == ts and start_levels(0.0) == ts[-1:]
    for t0 in LEVELS:
        lv = start_levels(t0)
        assert lv[0] <= t0 + 1e-9 and lv == ts[ts.index(lv[0]) :]
    import shutil

    from backend.loading import DEFAULT_MODEL

    copy = tmp_path / "copy.safetensors"  # the same weights under another name: no difference
    shutil.copy(DEFAULT_MODEL, copy)
    doc = run([str(DEFAULT_MODEL), str(copy)], n=2, workers=1, out=str(tmp_path / "out"))
    (model, mine), (_, theirs) = doc["results"].items()
    assert "student.safetensors" in model and len(mine["per_pair"]) == 2 and theirs["per_pair"] == mine["per_pair"]
    assert len(mine["per_pair"][0]) == 1 + len(LEVELS) and not any(k in REFERENCES for k in mine["per_pair"][0])
    assert [list(r) for r in doc["references"]] == [list(REFERENCES)] * 2
    assert doc["references"][0]["ground truth"]["extra_objects"] >= 0
    stored = tmp_path / "out" / "first_frame.json"
    assert json.loads(stored.read_text()) == doc
    text = (tmp_path / "out" / "first_frame.md").read_text()
    stored.with_suffix(".md").unlink()
    assert rerender(stored) == text  # the markdown from stored scores alone
    assert text.count("| (no model) |") == 2 and text.count("+0.000 ± 0.000 (n=2)") == 3 * (1 + len(LEVELS))


def test_decoder_bench_pairs_decoders_on_the_same_latents(tmp_path):
    """`bench decoder`: two files with the same weights score the same on every row (+0.000 ± 0.000 paired,
    since they decode the same latents); a file with another encoder is refused before any work."""
    import json

    import torch

    from backend import checkpoint
    from backend.bench.decoder import PAIRED, ROWS, check_autoencoders, run
    from backend.loading import DEFAULT_AE, load_autoencoder

    same, other = tmp_path / "same.safetensors", tmp_path / "other.safetensors"
    ae = load_autoencoder(DEFAULT_AE)
    checkpoint.save(same, ae, ae.cfg, {"note": "copy"})
    with torch.no_grad():
        next(ae.encoder.parameters()).add_(0.01)
    checkpoint.save(other, ae, ae.cfg, {"note": "another encoder"})
    with pytest.raises(ValueError, match="another encoder"):
        check_autoencoders([str(DEFAULT_AE), str(other)])
    doc = run([str(DEFAULT_AE), str(same)], n=2, frames=4, workers=1, out=str(tmp_path / "out"))
    a, b = (r["per_pair"][0] for r in doc["results"].values())
    assert json.dumps(a) == json.dumps(b) and set(ROWS) < set(a) and a["psnr_db"] > 20  # (NaN-safe equality)
    text = (tmp_path / "out" / "decoder_validation.md").read_text().split("Paired differences")[1]
    assert text.count("| +0.000 ± 0.000 (n=2) ") + text.count("| n/a ") == len(ROWS) * len(PAIRED)
    assert text.count("+0.000 ± 0.000") >= len(ROWS)  # adherence is defined on every row


def test_a_student_is_evaluated_with_the_autoencoder_of_its_folder(models_folder):
    """A training run that trained its own autoencoder (the quick recipe end to end) leaves it beside the
    student: benchmarks decode that student with it, as training encoded with it, and name it in the label;
    a student alone in its folder gets the shipped one, unnamed."""
    import torch

    from backend.bench.tables import weights_label, weights_record
    from backend.loading import DEFAULT_AE, folder_autoencoder, student_and_ae
    from backend.train.common import stage_autoencoder

    (alone, _), (own, ae) = models_folder("alone"), models_folder("own", own_autoencoder=True)
    assert folder_autoencoder(alone) == DEFAULT_AE and folder_autoencoder(own) == own / "autoencoder.safetensors"
    mine = next(student_and_ae(str(own / "student.safetensors"))[1].decoder.parameters())
    shipped = next(student_and_ae(str(alone / "student.safetensors"))[1].decoder.parameters())
    assert torch.equal(mine, next(ae.decoder.parameters())) and not torch.equal(mine, shipped)
    assert torch.equal(next(stage_autoencoder(own).decoder.parameters()), mine)  # training's rule is the same
    rec = {d: weights_record(str(d / "student.safetensors")) for d in (alone, own)}
    assert rec[alone]["sha256"] == rec[own]["sha256"]
    assert " with " not in weights_label("alone", rec[alone])
    assert weights_label("own", rec[own]).endswith(f"with `{own / 'autoencoder.safetensors'}`")
    from backend.bench.validation import Variant  # resumed validation results: keyed by both

    pair = [("a red circle on plain", 1)]
    keys = {d: Variant("x", weights=str(d / "student.safetensors")).keys(pair, 8) for d in (alone, own)}
    assert keys[alone] == Variant("x").keys(pair, 8) and keys[own] != keys[alone]


def test_model_bench_names_the_near_blank_frames():
    """`bench model` lists, per held-out video, the runs of frames whose contrast fell below the dataset's
    range (the 'no collapse' target), so the finding can be traced to a prompt and a frame."""
    from backend.bench.model import collapse_lines, low_frames, spans

    assert low_frames([1.0, 20.0, 3.0, 12.7], 12.7) == [0, 2]
    assert spans([3, 4, 5, 9]) == "3-5, 9" and spans([7]) == "7" and spans([]) == ""
    r = {
        "per_prompt": [
            {
                "prompt": "a red circle on plain",
                "seed": 4,
                "full_low_contrast_frames": [200, 201, 250],
                "window_low_contrast_frames": [],
            },
            {
                "prompt": "a square on stripes",
                "seed": 5,
                "full_low_contrast_frames": [],
                "window_low_contrast_frames": [],
            },
        ]
    }
    full, window = collapse_lines(r)
    assert full == (
        "Frames below the dataset's contrast range, full cache: 3 in 1 of 2 videos "
        '("a red circle on plain" (seed 4): 200-201, 250).'
    )
    assert window.endswith("window 16: 0 in 0 of 2 videos.")
    assert collapse_lines({"per_prompt": [{"prompt": "x", "seed": 0}]}) == []  # reports from before: no line


def test_context_probe_scores_each_cache_on_the_same_video(tmp_path):
    """`bench context`: one row per (pair, cache), windows then the full cache; a window as long as the video
    is the full cache (same noise), so their rows agree; the table lists near-blank frames per row; a pair
    must be 'PROMPT@SEED' in the grammar."""
    import json

    from backend.bench.context import parse_pair, run

    assert parse_pair("a red circle on plain blue@7") == ("a red circle on plain blue", 7)
    for bad in ("a red circle on plain blue", "a red circle@x", "a purple circle@3"):
        with pytest.raises(ValueError):
            parse_pair(bad)
    rows = run([("a red circle on plain blue", 7)], frames=4, windows=(2, 4), workers=1, out=str(tmp_path))
    assert [r["cache"] for r in rows] == ["window 2", "window 4", "full"]
    assert {k: rows[1][k] for k in rows[1] if k != "cache"} == {k: rows[2][k] for k in rows[2] if k != "cache"}
    doc = json.loads((tmp_path / "context_probe.json").read_text())
    assert doc["rows"] == rows and doc["frames"] == 4
    table = (tmp_path / "context_probe.md").read_text()
    assert table.count("| a red circle on plain blue (7) |") == 3 and "near-blank frames" in table
