"""Explorer logic without a server: history, signals, views, controller actions, persistence, bad input."""

import json

import numpy as np
import pytest

from explorer import figures, views
from explorer.controller import Explorer, budget_text
from explorer.history import RunHistory, Snapshot
from explorer.persist import load_runs
from explorer.run import RunConfig
from explorer.sessions import SessionError, SessionStore
from explorer.signals import rank01
from explorer.views import parse_layer

PROMPT = "a red circle and a square on blue stripes behind a wall"


@pytest.fixture(scope="module")
def shipped_models():
    from backend.loading import shipped

    return shipped()


@pytest.fixture()
def ex(tmp_path, shipped_models):
    model, ae = shipped_models
    return Explorer(store=SessionStore(tmp_path / "sessions"), model=model, ae=ae)


def cfg(**kw):
    base = dict(prompt=PROMPT, seed=0, frames=12, policy="window", budget="4f")
    base.update(kw)
    return RunConfig(**base)


# ---------------------------------------------------------------- pure pieces
def test_rank01_ties_and_order():
    r = rank01(np.array([3.0, 1.0, 2.0, 2.0]))
    assert r[1] == 0.0 and r[0] == 1.0 and r[2] == r[3] == pytest.approx(0.5)


def test_budget_text_and_layer_parsing():
    assert budget_text(8, "frames", "window") == "8f"
    assert budget_text(12.5, "% of full", "sink") == "12.5%"
    assert budget_text(512, "KB", "h2o") == "512KB"
    assert budget_text(0, "frames", "full") == ""  # the full cache has no budget
    for bad in (0, -3, "x", float("nan")):
        with pytest.raises(ValueError):
            budget_text(bad, "frames", "window")
    with pytest.raises(ValueError, match="unit"):
        budget_text(3, "parsecs", "window")
    assert parse_layer("mean", 4) is None and parse_layer("layer 2", 4) == 2
    with pytest.raises(ValueError):
        parse_layer("layer 9", 4)


def test_snapshots_stay_bounded_and_keep_the_newest():
    h = RunHistory(2, 7, 64, 8, 1, 1000, max_snapshots=16)
    for c in range(300):
        ids = [np.arange(10), np.arange(10)]
        h.add_snapshot(Snapshot(c, ids, {"attention": [np.full(10, c, np.float32)] * 2}))
    assert len(h.snapshots) <= 17
    assert h.snapshots[-1].chunk == 299
    chunks = [s.chunk for s in h.snapshots]
    assert chunks == sorted(chunks)


def test_cache_map_geometry_hits_the_token_drawn():
    h = RunHistory(4, 7, 64, 8, 1, 20)
    geo = views.CacheMapGeometry.for_history(h)
    x = 2 * (geo.block_w + geo.gap) + 5 * geo.cell_w + 1  # layer 2, token 5
    y = geo.top + (3 + 1) * geo.row_h + 1  # frame 3
    assert geo.hit(x, y) == (2, 3, 5)
    assert geo.hit(2 * (geo.block_w + geo.gap) - 2, y) is None  # in the gap between layers
    assert geo.hit(5, 2) is None  # legend strip


# ---------------------------------------------------------------- controller
def test_step_step_frame_and_views(ex):
    ws = ex.ws("a")
    ex.step(ws, cfg())  # prefill
    assert ws.run.data.history.n_steps == 1
    ex.step_frame(ws, cfg())
    ex.step_frame(ws, cfg())
    d = ws.run.data
    assert d.frames_done == 2
    v = ex.view(ws, None, "attention", "mean")
    assert v.frame == 1 and v.heat_img.ndim == 3 and v.cache_img.ndim == 3
    assert np.isfinite(d.history.frame_values("attention", 1)).all()
    assert np.isfinite(d.history.frame_values("predicted", 1)).all()  # SEH on every run


def test_bounded_run_evicts_and_records_it(ex):
    ws = ex.ws("b")
    for _ in ex.run_iter(ws, cfg(policy="h2o", budget="4f"), every_s=0):
        pass
    h = ws.run.data.history
    occ = h.arrays()["occupancy"]
    assert occ.max() <= h.budget + h.tokens_per_frame  # budget + the newest chunk
    status = h.status()
    assert (status == 2).any() and (status[:, -1] == 1).all()  # evicted tokens; the newest frame cached
    assert (h.prompt_status() == 3).all()  # anchors never evicted
    # the score signal exists for a scoring policy and is a rank in [0, 1]; between evictions (h2o evicts
    # every second chunk) it is the last eviction's, for the tokens still cached
    vals = np.stack([h.frame_values("score", f) for f in range(12)])
    assert np.isfinite(vals).any() and np.nanmin(vals) >= 0 and np.nanmax(vals) <= 1
    last = h.snapshot_at(signal="score")
    cached = set(np.concatenate(h.snapshot_at().ids).tolist())
    assert set(np.concatenate(last.ids).tolist()) >= cached - set(range(h.token_id(last.chunk + 1, 0, 0), h.n_tokens))
    # at each frame's own time: a frame whose chunk an eviction followed has ranks; one between evictions
    # has none, and the view says why
    scored = {s.chunk for s in h.snapshots if s.values.get("score") is not None}
    assert scored and len(scored) < 12  # h2o evicts every second chunk
    for f in range(12):
        has = np.isfinite(h.frame_values("score", f, chunk=f)).any()
        assert has == (f in scored), f
        text = ex.view(ws, f, "score", "mean").status
        assert ("not scored at this frame's time" in text) == (f not in scored)
    # drill-down on an evicted token names the chunk
    L, tid = np.argwhere(h.evicted_at >= 0)[0]
    ws.token = int(tid)
    fig, info = ex.drill_down(ws, "attention")
    assert f"evicted at chunk {h.evicted_at[L, tid]}" in info
    assert len(fig.data) == h.n_layer
    assert ws.run_saved is not None  # finished runs are saved


def test_stop_pauses_saves_and_run_continues_the_same_run(ex):
    ws = ex.ws("c")
    config = cfg(frames=20, policy="sink")
    it = ex.run_iter(ws, config, every_s=0)
    for _ in range(5):
        next(it)
    assert ex.stop(ws) is True  # the stream reports the pause and saves
    list(it)  # the generator ends on its own
    run, sid = ws.run, ws.run_saved[0]
    done = run.data.frames_done
    assert 0 < done < 20 and run.paused and not run.finished
    assert "paused" in ex.view(ws, None, "attention", "mean").status
    live = ex.view(ws, 3, "attention", "layer 1")
    other = ex.ws("c2")
    assert ex.load_session(other, sid) == "run"
    again = ex.view(other, 3, "attention", "layer 1")
    assert np.array_equal(live.heat_img, again.heat_img)
    assert np.array_equal(live.cache_img, again.cache_img)
    assert other.run.data.frames_done == done
    # Run again: the same run goes on from where it paused, and ends with the frames of an unpaused run
    for _ in ex.run_iter(ws, config, every_s=0):
        pass
    assert ws.run is run and run.data.frames_done == 20 and run.finished
    saved = [x for x in ex.store.list() if hasattr(x, "n_frames")]
    assert ws.run_saved[1] == 20 and len(saved) == 1 and saved[0].n_frames == 20  # the pause's save replaced
    whole = ex.ws("c3")
    for _ in ex.run_iter(whole, config, every_s=0):
        pass
    assert np.array_equal(whole.run.data.frames, run.data.frames)


def test_runs_are_saved_on_completion_stop_or_demand_never_on_abandon(ex):
    ws = ex.ws("save")
    ex.step_frame(ws, cfg(frames=6))
    ex.step_frame(ws, cfg(frames=6))
    assert ws.run_saved is None and ex.store.list() == []
    assert "not saved yet" in ex.view(ws, None, "score", "mean").status
    ex.step_frame(ws, cfg(frames=6, seed=3))  # another config: a new run
    assert ex.store.list() == [] and "was replaced" in ex.view(ws, None, "score", "mean").status
    ex.reset(ws)
    assert ex.store.list() == []
    ex.step_frame(ws, cfg(frames=6))
    assert ex.stop(ws) is False and ws.run_saved is not None  # Stop without a stream saves here
    assert len(ex.store.list()) == 1
    ex.step_frame(ws, cfg(frames=6))  # Step continues the paused run
    assert ws.run.data.frames_done == 2 and not ws.run.paused


def test_every_view_shows_the_scrubbed_time(ex):
    """Heatmap, cache map, timeline marker and drill-down at a scrubbed frame show the cache as it was
    then, from the history's per-chunk snapshots, also after older snapshots were thinned."""
    ws = ex.ws("time")
    config = cfg(frames=12, policy="h2o", budget="3f", params="period=1")
    for _ in ex.run_iter(ws, config, every_s=0):
        pass
    h = ws.run.data.history
    thin = ex.ws("time-thin")
    ex.step(thin, config)
    thin.run.data.history.max_snapshots = 3  # thinned from the 4th chunk on
    for _ in ex.run_iter(thin, config, every_s=0):
        pass
    ht = thin.run.data.history
    assert len(ht.snapshots) < 12
    for f in (5, 9):
        snap = next(s for s in h.snapshots if s.chunk == f)
        for sig in ("score", "attention", "predicted"):
            for layer in range(h.n_layer):
                want = np.full(h.tokens_per_frame, np.nan, np.float32)
                ids, vals = snap.ids[layer], snap.values[sig][layer]
                sel = (ids >= h.token_id(f, 0, 0)) & (ids < h.token_id(f + 1, 0, 0))
                want[ids[sel] - h.token_id(f, 0, 0)] = vals[sel]
                got = h.frame_values(sig, f, layer, chunk=f).ravel()
                assert np.array_equal(got, want, equal_nan=True) and np.isfinite(got).all()
                assert np.array_equal(ht.frame_values(sig, f, layer, chunk=f), got.reshape(8, 8), equal_nan=True)
        v = ex.view(ws, f, "score", "layer 0")
        assert np.array_equal(v.cache_img, views.cache_map(h, chunk=f, frame=f))
        assert not np.array_equal(v.cache_img, views.cache_map(h, frame=f))  # not the end of the run
        assert v.hover["values"][0][1] == pytest.approx(float(h.frame_values("score", f, 0, chunk=f)[0, 0]), abs=1e-3)
        marker = [s for s in v.occupancy.layout.shapes if s["line"]["color"] == "#17becf"]
        assert marker and marker[0]["x0"] == h.evict_step(f)
    # by the end of the run most of frame 5 is evicted: its heatmap then is mostly empty, at its own time full
    assert np.isnan(h.frame_values("score", 5)).mean() > 0.5 and np.isfinite(h.frame_values("score", 5, chunk=5)).all()
    ws.scrub["run"].follow, ws.scrub["run"].frame = False, 5
    ws.token = h.token_id(5, 0, 0)
    fig, info = ex.drill_down(ws, "attention")
    assert "at the scrubbed time (chunk 5): cached in layers 0, 1, 2, 3" in info
    assert any(getattr(s, "x0", None) == 5 and s.line.color == "#17becf" for s in fig.layout.shapes)


def test_the_run_as_a_command_line_parses_to_the_same_run():
    import shlex

    from backend.__main__ import build_parser

    c = cfg(params="alpha=0.5, storage=int4", policy="pafu", budget="12.5%", guidance=2.0)
    argv = shlex.split(c.cli())
    assert argv[:3] == ["python", "-m", "backend"]
    a = build_parser().parse_args(argv[3:])
    assert (a.prompt, a.frames, a.seed, a.policy, a.budget) == (c.prompt, c.frames, c.seed, c.policy, c.budget)
    assert a.policy_arg == ["alpha=0.5", "storage=int4"]
    assert a.sampler == ["guidance=2", "first_guidance=2"]


def test_the_scrubber_clamps_instead_of_failing():
    from explorer.scrubber import FrameSlider

    s = FrameSlider(0, 63, value=0, step=1)
    assert s.preprocess(-1) == 0 and s.preprocess(65) == 63 and s.preprocess(7) == 7


def test_sessions_are_private_to_each_workspace(ex):
    a, b = ex.ws("alice"), ex.ws("bob")
    ex.step_frame(a, cfg())
    assert b.run is None
    assert ex.view(b, None, "score", "mean").frames_done == 0


def test_compare_lockstep_metrics_and_exports(ex, tmp_path):
    ws = ex.ws("d")
    configs = ex.compare_configs(cfg(frames=12), ["window", "pafu"], ["1/4"], "")  # pafu also pins a sink frame
    assert [c.label for c in configs] == ["window @ 25%", "pafu @ 25%"]
    for cmp in ex.compare_iter(ws, configs, every_s=0):
        assert len({d.frames_done for d in cmp.datas}) == 1  # lockstep
    assert cmp.datas[cmp.reference].config.policy == "full"
    rows = cmp.metrics()
    assert [r["config"] for r in rows] == ["full", "window @ 25%", "pafu @ 25%"]
    from explorer.compare import METRIC_WIDTHS

    assert all(list(r) == list(METRIC_WIDTHS) for r in rows)  # the app's column widths fit the columns
    assert all(np.isfinite(r["PSNR vs full (dB)"]) for r in rows[1:])
    v = ex.compare_view(ws, 4, "pafu @ 25%")
    assert v.wipe[0].shape == v.wipe[1].shape and v.diff.ndim == 3
    mp4 = ex.export(ws, "compare", "mp4", "attention")
    import imageio.v3 as iio

    assert iio.immeta(mp4, plugin="FFMPEG")["codec"].startswith("h264")
    first = iio.imread(mp4, index=0, plugin="FFMPEG")
    assert first.shape[1] > 3 * 256  # three panels + the colour bar
    csv = ex.export(ws, "compare", "csv")
    assert "PSNR vs full" in csv.read_text()
    js = json.loads(ex.export(ws, "compare", "json").read_text())
    assert len(js["rows"]) == 3
    z = ex.export(ws, "compare", "zip")
    import zipfile

    assert "session.json" in zipfile.ZipFile(z).namelist()


def test_run_exports(ex):
    ws = ex.ws("e")
    with pytest.raises(ValueError, match="nothing to export"):
        ex.export(ws, "run", "mp4")
    for _ in ex.run_iter(ws, cfg(frames=6, budget="2f"), every_s=0):
        pass
    png = ex.export(ws, "run", "png", "score", "mean", 3)
    assert png.read_bytes()[:4] == b"\x89PNG"
    gif = ex.export(ws, "run", "gif")
    import imageio.v3 as iio

    assert iio.imread(gif).shape[0] >= 2
    rows = ex.export(ws, "run", "csv").read_text().splitlines()
    assert rows[0].startswith("step,phase,chunk") and len(rows) == 1 + ws.run.data.history.n_steps


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(budget="0"), "positive"),
        (dict(budget="99f"), "above the full cache"),
        (dict(frames=5000), "limit"),
        (dict(frames=0), "positive"),
        (dict(prompt="a purple circle"), "unknown word"),
        (dict(policy="nope"), "unknown policy"),
        (dict(params="alpha"), "KEY=VALUE"),
        (dict(guidance=-1.0), "guidance"),
        (dict(guidance=float("nan")), "guidance"),
    ],
)
def test_bad_input_is_rejected_and_the_run_survives(ex, bad, match):
    ws = ex.ws("f")
    ex.step_frame(ws, cfg())
    before = ws.run
    with pytest.raises(ValueError, match=match):
        for _ in ex.run_iter(ws, cfg(**bad), every_s=0):
            pass
    assert ws.run is before and ws.run.data.frames_done == 1  # nothing lost


def test_bad_session_names_and_damaged_sessions(ex):
    ws = ex.ws("g")
    ex.step_frame(ws, cfg())
    for name in ("../evil", "a/b", "..", "x\\y"):
        with pytest.raises(SessionError):
            ex.save_as(ws, name)
    sid = ex.save_as(ws, "my run")
    with pytest.raises(SessionError):
        ex.load_session(ws, "../" + sid)
    path = ex.store.path(sid) / "session.json"
    path.write_bytes(path.read_bytes()[:40])  # truncated
    with pytest.raises(SessionError, match="damaged|cannot"):
        ex.load_session(ws, sid)
    rows, note = ex.sessions()
    assert sid in note  # listed as a problem
    assert ws.run.data.frames_done == 1


def test_occupancy_figure_has_units_and_budget():
    h = RunHistory(2, 7, 64, 8, 1, 4)
    fig = figures.occupancy_figure(h, budget=100, current_step=None)
    assert fig.layout.yaxis.title.text == "tokens per layer"
    assert any("budget" in (a.text or "") for a in fig.layout.annotations)


def test_reloaded_history_round_trip(ex):
    ws = ex.ws("h")
    for _ in ex.run_iter(ws, cfg(frames=5, policy="tova", budget="2f"), every_s=0):
        pass
    _, datas = load_runs(ex.store, ws.run_saved[0])
    a, b = ws.run.data.history, datas[0].history
    assert np.array_equal(a.evicted_at, b.evicted_at)
    assert a.budget == b.budget
    for f in range(5):
        for s in ("score", "attention", "predicted"):
            np.testing.assert_array_equal(a.frame_values(s, f, 0), b.frame_values(s, f, 0))


def test_pafu_runs_show_the_head_their_policy_uses(shipped_models):
    """The `predicted` signal of a PaFu-KV run is its own head's (SSE or hindsight), so the explorer never
    fills the cache's predictions with another head before the policy scores them."""
    import torch

    from backend.loading import load_head
    from explorer.run import Run

    model, ae = shipped_models
    for labels in ("sse", "hindsight"):
        run = Run.start(
            cfg(policy="pafu", params=f"labels={labels}", budget="4f"), model, ae, head=load_head(labels="sse")
        )
        want = load_head(labels=labels)
        got = dict(run.head.named_parameters())
        assert all(torch.equal(p, got[k]) for k, p in want.named_parameters())
        recs = []
        while run.stepper.chunk < 6:  # past the first evictions
            recs.append(run.step())
        commit = [r for r in recs if r.phase == "commit"][-1]
        layer = run.stepper.cache.layers[0]  # the recorded ids are the cache's at that commit
        k = (layer.meta["kind"] == 1) & torch.from_numpy(np.isin(layer.meta["token_id"].numpy(), commit.ids[0]))
        with torch.no_grad():
            expect = want(0, want.features(layer.k[:, k], layer.meta["y"][k], layer.meta["x"][k])).numpy()
        by_id = dict(zip(commit.ids[0].tolist(), commit.signals["predicted"][0].tolist()))
        got = np.array([by_id[i] for i in layer.meta["token_id"][k].tolist()])
        assert np.allclose(got, expect, atol=1e-5)


def test_a_models_folder_serves_its_own_weights(tmp_path, models_folder):
    """`python app.py --models DIR`: a training run's folder serves its student with the shipped autoencoder
    when it has none; PaFu-KV and the `predicted` signal use the folder's heads only (a student from another
    run is not scored by heads distilled for the shipped one), and the teacher too; each missing file is
    named with the command that writes it. A folder without a student is refused."""
    import shutil

    import torch

    from backend.loading import DEFAULT_AE, MODELS_DIR, load_autoencoder, load_head
    from explorer.run import Run

    with pytest.raises(FileNotFoundError, match="no student.safetensors"):
        Explorer(store=SessionStore(tmp_path / "s0"), models=tmp_path / "empty")
    folder, _ = models_folder()
    ex = Explorer(store=SessionStore(tmp_path / "s1"), models=folder)
    assert ex.custom_models == folder and ex.head is None and ex._meta()["models"] == str(folder)
    shipped_ae = load_autoencoder(DEFAULT_AE)
    assert all(torch.equal(p, q) for p, q in zip(ex.ae.parameters(), shipped_ae.parameters()))
    with pytest.raises(ValueError, match="--models-dir"):
        Run.start(cfg(policy="pafu", budget="4f"), ex.model, ex.ae, ex.head, models=ex.custom_models)
    ws = ex.ws("m")
    ex.step_frame(ws, cfg(policy="window", budget="4f"))
    with pytest.raises(ValueError, match="no teacher.safetensors"):
        ex.teacher_salience(ws, 0)
    ex.autosave(ws)  # the session names the weights that made it
    (info,) = ex.store.list()
    assert f"model {ex.model_hash[:8]} from " in info.summary and info.summary.split(" · ")[-2].endswith("/run_models")
    shutil.copy(MODELS_DIR / "salience_head_hindsight.safetensors", folder / "salience_head.safetensors")
    run = Run.start(cfg(policy="pafu", budget="4f"), ex.model, ex.ae, ex.head, models=ex.custom_models)
    hind = dict(load_head(labels="hindsight").named_parameters())
    assert all(torch.equal(p, hind[k]) for k, p in run.head.named_parameters())  # the folder's "sse" file
    assert Explorer(store=SessionStore(tmp_path / "s2"), models=MODELS_DIR).custom_models is None


def test_app_refuses_a_models_folder_without_a_student(tmp_path, capsys):
    """`python app.py --models DIR` with no student in DIR, or a damaged one, stops with a usage error naming
    the file, before anything is served."""
    import app

    with pytest.raises(SystemExit) as e:
        app.main(["--models", str(tmp_path), "--sessions", str(tmp_path / "s")])
    assert e.value.code == 2 and "no student.safetensors" in capsys.readouterr().err
    (tmp_path / "student.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit):
        app.main(["--models", str(tmp_path), "--sessions", str(tmp_path / "s")])
    assert "corrupt" in capsys.readouterr().err


def test_old_scratch_exports_are_cleaned(tmp_path):
    """Exported zips live in a scratch folder; files older than the limit go, newer ones stay."""
    import os
    import time

    from explorer.session_actions import _clean_old

    old, new = tmp_path / "old.zip", tmp_path / "new.zip"
    old.write_bytes(b"x")
    new.write_bytes(b"y")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    _clean_old(tmp_path, max_age_s=3600)
    assert not old.exists() and new.exists()
    _clean_old(tmp_path / "missing", max_age_s=3600)  # no folder yet: nothing to do, no error


def test_guidance_reaches_the_sampler_and_compare_shares_it(ex):
    from dataclasses import replace

    from backend.config import SamplerConfig

    assert cfg().sampler() == SamplerConfig()  # None = the shipped sampler
    assert (cfg(guidance=2.5).sampler().guidance, cfg(guidance=2.5).sampler().first_guidance) == (2.5, 2.5)
    # the kind of model decides the prompt check and the sampler: free text and Self-Forcing's sampling for Wan
    from backend.models.wan_parts import WAN_SAMPLER

    assert cfg(prompt="any free text", model="wan").validate().sampler() == SamplerConfig(**WAN_SAMPLER)
    with pytest.raises(ValueError, match="unknown word"):
        cfg(prompt="any free text").validate()
    with pytest.raises(ValueError, match="unknown model kind 'sora'"):
        cfg(model="sora").validate()
    ws = ex.ws("g")
    ex.step_frame(ws, cfg(guidance=1.0, frames=6))
    ex.step_frame(ws, cfg(guidance=1.0, frames=6))
    assert ws.run.stepper.sampler.guidance == 1.0 and ws.run.data.frames_done == 2
    ex.reset(ws)
    ex.step_frame(ws, cfg(guidance=3.0, frames=6))
    assert ws.run.stepper.sampler.guidance == 3.0 and ws.run.data.frames_done == 1
    configs = ex.compare_configs(cfg(guidance=3.0, policy="full", budget=""), ["sink"], ["1/2"], "")
    assert all(c.guidance == 3.0 for c in configs)
    from explorer.compare import Comparison

    with pytest.raises(ValueError, match="guidance"):
        Comparison.start([configs[0], replace(configs[0], guidance=1.0)], ex.model, ex.ae)


def test_policy_help_and_commit_status_show_what_reading_attention_costs():
    from backend.records import StepRecord
    from explorer.run import describe
    from explorer.ui import policy_help

    assert "reads attention probabilities" in policy_help("h2o")
    assert "reads no attention" in policy_help("pafu") and "reads raw q.k" in policy_help("deep_forcing")
    assert policy_help("nosuch") == ""

    class Data:  # what describe() reads of a RunData
        frames_done, config = 3, RunConfig(prompt="a red circle on plain blue", frames=8)

    def rec(stats_ms):
        return StepRecord.make(
            index=7,
            phase="commit",
            chunk=2,
            step=-1,
            t=0.0,
            frames=(2, 3),
            preview=None,
            occupancy=[10, 10],
            nbytes=[100, 100],
            eviction=None,
            ms=30.0,
            stats_ms=stats_ms,
        )

    assert "attention statistics 6 ms of it" in describe(rec(6.2), Data())
    assert "attention statistics" not in describe(rec(0.0), Data())


def test_salience_numbers_agreement_and_object_departures(ex):
    from explorer.numbers import spearman, top_recall

    assert spearman(np.arange(10.0), np.arange(10.0) ** 2) == pytest.approx(1.0)
    assert spearman(np.arange(10.0), -np.arange(10.0)) == pytest.approx(-1.0)
    assert top_recall(np.arange(8.0), np.arange(8.0)) == 1.0 and top_recall(np.arange(8.0), -np.arange(8.0)) == 0.0
    ws = ex.ws("numbers")
    for _ in ex.run_iter(ws, cfg(frames=12, policy="h2o", budget="3f", params="period=1"), every_s=0):
        pass
    rows, objects, note = ex.salience_numbers(ws)
    assert len(rows) == 4 and all(r["evictions"] > 0 for r in rows)
    for r in rows:
        for k in ("teacher spearman", "oracle spearman"):
            assert -1 <= r[k] <= 1
        for k in ("teacher top-25% recall", "oracle top-25% recall"):
            assert 0 <= r[k] <= 1
    # the oracle is a full-cache run of the same noise: its first frames before any eviction equal the run's
    assert ws.run.data.oracle[0] == 12
    assert len(objects) == 2 and objects[0]["object"] == "red circle" and objects[0]["frames seen"] > 0
    h = ws.run.data.history
    for o in objects:
        for layer in range(h.n_layer):
            assert o[f"L{layer}"].startswith(("left at chunk", "never seen")) or "tokens cached" in o[f"L{layer}"]
    # a run that never evicts has nothing to compare, and says so
    ws2 = ex.ws("numbers-full")
    for _ in ex.run_iter(ws2, cfg(frames=6, policy="full", budget=""), every_s=0):
        pass
    rows2, _, note2 = ex.salience_numbers(ws2)
    assert all(r["evictions"] == 0 for r in rows2) and "No policy scores" in note2


def test_compare_warns_when_the_reference_loses_an_object_and_explains_blank_cells(ex):
    from explorer.compare_actions import blank_cells_note

    ws = ex.ws("refwarn")
    base = cfg(frames=6, policy="full", budget="", prompt="a red circle on blue stripes")
    for _ in ex.compare_iter(ws, ex.compare_configs(base, ["window"], ["1/2"], ""), every_s=0):
        pass
    cmp = ws.compare
    status = ex.compare_view(ws, None).status
    assert "loses" not in status  # the shipped model draws the red circle here
    cmp.datas[cmp.reference].frames[:] = 128  # a reference that shows nothing at all
    cmp.metrics_cache.clear()
    assert "The full-cache reference itself loses the red circle" in ex.compare_view(ws, None).status
    note = blank_cells_note([{"identity": float("nan"), "landmark revisit": float("nan")}], base.prompt)
    assert "identity" in note and "no camera pan" in note
    assert blank_cells_note([{"identity": 1.0}], base.prompt) == ""


def test_budget_sweep_draws_quality_against_budget(ex):
    ws = ex.ws("sweep")
    base = cfg(frames=24, policy="full", budget="")
    configs, note = ex.sweep_configs(base, ["window", "random"])
    assert len(configs) == 8 and note == "" and {c.budget for c in configs} == {"6.25%", "12.5%", "25%", "50%"}
    with pytest.raises(ValueError, match="at most 6"):
        ex.compare_configs(base, ["window", "random"], ["1/16", "1/8", "1/4", "1/2"], "")
    for _ in ex.compare_iter(ws, configs, every_s=0):
        pass
    pts = ws.compare.sweep_points()
    assert set(pts) == {"window", "random"}
    for p in pts.values():
        shares = [x[0] for x in p]
        assert len(p) == 4 and shares == sorted(shares) and 5 < shares[0] < shares[-1] < 51
        assert p[-1][1] >= p[0][1] - 1.0  # more budget is not clearly worse against the full cache
    fig = ex.compare_view(ws, None).sweep
    assert len(fig.data) == 4 and fig.layout.xaxis.type == "log" and "dB" in fig.layout.yaxis.title.text


def test_runs_across_sessions_table_and_overlay(ex, monkeypatch):
    import explorer.runs as runs_mod

    ws = ex.ws("runs")
    base = cfg(frames=8, policy="full", budget="")
    for _ in ex.compare_iter(ws, ex.compare_configs(base, ["window"], ["1/2"], ""), every_s=0):
        pass
    for c in (cfg(frames=8, policy="h2o", budget="4f"), cfg(frames=8, policy="sink", budget="4f", seed=5)):
        for _ in ex.run_iter(ws, c, every_s=0):
            pass
    rows, keys = ex.runs_table()
    by = {r["config"]: r for r in rows}
    assert len(rows) == 4 and set(by) == {"full", "window @ 50%", "h2o @ 4f", "sink @ 4f"}
    want = ws.compare.metrics()[1]
    assert by["window @ 50%"]["PSNR vs full (dB)"] == pytest.approx(want["PSNR vs full (dB)"])
    assert np.isfinite(by["h2o @ 4f"]["PSNR vs full (dB)"])  # matched with the compare's full run
    assert not np.isfinite(by["sink @ 4f"]["PSNR vs full (dB)"])  # seed 5: no full-cache run of its noise
    calls = []
    monkeypatch.setattr(runs_mod, "load_runs", lambda *a: calls.append(a) or (_ for _ in ()).throw(AssertionError))
    psnr, occ = ex.runs_overlay(keys)  # sessions are read once, then kept
    assert not calls
    assert len(psnr.data) == 2 and len(occ.data) == 4  # PSNR only where there is a reference
    assert "dB" in psnr.layout.yaxis.title.text and "MB" in occ.layout.yaxis.title.text
    with pytest.raises(ValueError, match="no saved run"):
        ex.runs_overlay(["nope#0"])


def test_budget_sweep_leaves_out_shares_a_policy_cannot_hold(ex):
    configs, note = ex.sweep_configs(cfg(frames=24, policy="full", budget=""), ["pafu", "window"])
    assert "pafu @ 6.25%" in note and all(c.label != "pafu @ 6.25%" for c in configs)
    assert {c.label for c in configs if c.policy == "window"} == {
        f"window @ {s}" for s in ("6.25%", "12.5%", "25%", "50%")
    }
    with pytest.raises(ValueError, match="sweep a longer video"):
        ex.sweep_configs(cfg(frames=2, policy="full", budget=""), ["h2o"])


def test_the_timeline_says_and_draws_that_the_budget_holds_after_each_eviction():
    h = RunHistory(2, 7, 64, 8, 1, 4)
    fig = figures.occupancy_figure(h, budget=100, current_step=None)
    texts = " ".join(a.text or "" for a in fig.layout.annotations)
    assert "after each eviction" in texts and "after each commit" not in texts
    band = [s for s in fig.layout.shapes if s.type == "rect"]
    assert len(band) == 1 and (band[0].y0, band[0].y1) == (100, 100 + 64)  # budget .. budget + one chunk


def test_the_history_is_a_pure_fold_over_the_records(shipped_models):
    """Everything the explorer shows of a run comes from its StepRecords: folding the same records into a fresh
    history gives the same arrays, snapshots and painted values, with no stepper, cache or policy at hand."""
    from explorer.run import Run

    model, ae = shipped_models
    run = Run.start(cfg(policy="h2o", budget="4f", frames=8), model, ae)
    recs = []
    while not run.finished:
        recs.append(run.step())
    live = run.data.history
    replay = RunHistory(
        live.n_layer, live.n_prompt, live.tokens_per_frame, live.grid, live.chunk_frames, 8, budget=live.budget
    )
    for rec in recs:
        replay.add_record(rec)
    for k, v in live.arrays().items():
        np.testing.assert_array_equal(v, replay.arrays()[k])
    assert [s.chunk for s in live.snapshots] == [s.chunk for s in replay.snapshots]
    for f in range(8):
        for sig in ("score", "attention", "predicted"):
            np.testing.assert_array_equal(live.frame_values(sig, f, 0), replay.frame_values(sig, f, 0))
    assert recs[-1].timings is not None and recs[-1].timings["frame_ms"].shape == (8,)


@pytest.mark.parametrize("policy", ["h2o", "full"])
def test_a_session_persists_the_record_stream_and_replay_refolds_it(shipped_models, tmp_path, policy):
    """A saved run is its records (thinned where the history thinned its snapshots: few snapshots kept here);
    loading folds them again into the same history, frames, latents and per-frame times, and the stream stays
    bounded: a thinned record holds only its own chunk's tokens."""
    from backend.record_io import pack_records, unpack_records
    from explorer.persist import save_runs
    from explorer.run import Run
    from explorer.sessions import SessionStore

    model, ae = shipped_models
    run = Run.start(cfg(policy=policy, budget="4f" if policy != "full" else "", frames=12), model, ae)
    run.data.history.max_snapshots = 3  # force thinning
    while not run.finished:
        run.step()
    live, log = run.data, run.data.log
    assert any(log.thinned) and not all(log.thinned)
    T = live.history.tokens_per_frame
    for rec, thinned in zip(log.records, log.thinned):
        if thinned and rec.ids is not None:
            assert all(ids is None or len(ids) <= T for ids in rec.ids) and rec.kept is None
    again = unpack_records(pack_records(log.records, live.history.n_layer))  # the packing is lossless
    for a, b in zip(log.records, again):
        for f in ("phase", "chunk", "ms", "frames", "t"):
            assert getattr(a, f) == getattr(b, f)
        for f in ("ids", "scores", "evicted", "kept"):
            x, y = getattr(a, f), getattr(b, f)
            assert (x is None) == (y is None)
            for u, v in zip(x or (), y or ()):
                assert (u is None and v is None) or np.array_equal(u, v)
    store = SessionStore(tmp_path)
    sid = save_runs(store, "replayed", "run", [live])
    _, (back,) = load_runs(store, sid)
    for k, v in live.history.to_arrays().items():
        np.testing.assert_array_equal(v, back.history.to_arrays()[k], err_msg=k)
    np.testing.assert_array_equal(live.frames, back.frames)
    np.testing.assert_array_equal(live.latents, back.latents)
    np.testing.assert_array_equal(live.frame_ms, back.frame_ms)
    assert back.frames_done == 12 and back.log.thinned == log.thinned
    live.log = None  # a run reloaded from a session written before the record stream saves as it was
    _, (old,) = load_runs(store, save_runs(store, "legacy", "run", [live]))
    np.testing.assert_array_equal(live.history.evicted_at, old.history.evicted_at)
    np.testing.assert_array_equal(live.frames, old.frames)
