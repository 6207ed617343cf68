"""Merged and admitted memory (MemRoPE, FadeMem, write-time admission) and the sink-collapse metric."""

import numpy as np
import pytest
import torch
from test_cache import filled

from backend.cache import KIND_FRAME
from backend.policies import make_policy
from backend.policies.admission import novelty, refused
from backend.sink_collapse import CollapseConfig, collapse_events, sink_collapse, sink_distance
from backend.stepper import Stepper

PROMPT = "a red circle and a square on blue stripes behind a wall"


def run(tiny, ae, policy, n=12, seed=3):
    st = Stepper(tiny, ae, PROMPT, n, seed=seed, policy=policy, preview=False)
    return st, list(st.run())


def test_memrope_folds_evicted_frames_into_two_ema_streams(tiny, ae):
    tpf, P = tiny.cfg.tokens_per_frame, tiny.cfg.n_prompt
    pol = make_policy("memrope", budget=P + 7 * tpf, sink_frames=1)  # sink 1 + memory 2 + recent
    st, recs = run(tiny, ae, pol)
    for layer in st.cache.layers:
        fr = layer.meta["frame"].numpy()
        long, short = (np.flatnonzero((fr == f) & (layer.meta["kind"].numpy() == KIND_FRAME)) for f in (1, 2))
        assert len(long) == len(short) == tpf  # the memory slots stay
        k = layer.k[:, torch.from_numpy(long)]
        assert torch.allclose(k, k[:, :1].expand_as(k))  # one vector per head (the code's global mean)
        assert not torch.allclose(layer.k[:, torch.from_numpy(long)], layer.k[:, torch.from_numpy(short)])
    ev = [r for r in recs if r.phase == "evict"]
    assert all((r.occupancy <= P + 7 * tpf).all() for r in ev)
    t = st.cache.layers[0].meta["pos"].numpy()[:, 0][st.cache.layers[0].meta["kind"].numpy() == KIND_FRAME]
    assert len(np.unique(t)) == np.ptp(t) + 1  # contiguous positions (reindex)


def test_memrope_rates_are_an_ema_of_the_evicted_means():
    from backend.observe import Observer
    from backend.policies.memrope import MemRoPE

    layer = filled(60, H=2, Dh=4)  # frames 0-5
    layer.meta["kind"] = torch.full((60,), KIND_FRAME)
    m = MemRoPE(sink_frames=1, long_rate=0.5, short_rate=1.0)
    m.bind(Observer(1))
    fr, kind = layer.meta["frame"].numpy(), layer.meta["kind"].numpy()
    first = np.flatnonzero(fr == 3)
    m._fold(0, layer, first, fr, kind)  # the first fold starts both streams at the mean
    mean3 = layer.k[:, torch.from_numpy(first)].mean(1)
    torch.testing.assert_close(layer.k[:, 10], mean3)
    second = np.flatnonzero(fr == 4)
    mean4 = layer.k[:, torch.from_numpy(second)].mean(1)
    m._fold(0, layer, second, fr, kind)
    torch.testing.assert_close(layer.k[:, 10], 0.5 * mean4 + 0.5 * mean3)  # long: rate 0.5
    torch.testing.assert_close(layer.k[:, 20], mean4)  # short: rate 1


def test_fademem_merges_old_neighbours_more_than_new_ones(tiny, ae):
    tpf, P = tiny.cfg.tokens_per_frame, tiny.cfg.n_prompt
    st, recs = run(tiny, ae, make_policy("fademem", budget=P + 8 * tpf, window=2), n=24)
    span = st.observer.extra["span"][1].numpy()
    layer = st.cache.layers[1]
    fr = layer.meta["frame"].numpy()
    frames = np.unique(fr[fr >= 0])
    spans = [span[np.flatnonzero(fr == f)[0]] for f in frames]
    assert sum(spans) >= 23  # every frame is in some entry (the newest chunk counts 1 or 0 before its keep)
    assert spans[-1] <= 1 and max(spans[:-2]) > 1  # dense near, merged far
    assert all((r.occupancy <= P + 8 * tpf).all() for r in recs if r.phase == "evict")


def test_admission_refuses_the_tokens_most_like_what_their_cell_holds():
    layer = filled(30, H=2, Dh=4)  # frames 0-2, 10 cells each
    layer.meta["kind"] = torch.full((30,), KIND_FRAME)
    layer.meta["y"] = torch.zeros(30, dtype=torch.long)
    layer.meta["x"] = torch.arange(30) % 10
    new = np.arange(20, 30)
    k = layer.k.clone()
    k[:, 20:25] = k[:, 10:15] * 2.0  # same direction as the frame before: no novelty
    layer.k = k
    layer._inv = None
    nov = novelty(layer, new)
    assert np.allclose(nov[:5], 0, atol=1e-6) and (nov[5:] > 0.01).all()
    out = refused(layer, 2, 0.3).tolist()
    assert len(out) == 3 and set(out) <= set(range(20, 25))  # 3 of the 5 copies


def test_sink_collapse_finds_a_snap_back_and_not_a_smooth_drift():
    rng = np.random.default_rng(0)
    sink = rng.integers(0, 255, (8, 8, 3))
    frames = []
    for t in range(60):
        drift = np.clip(sink + t * 2, 0, 255)  # moves away from the sink, steadily
        frames.append(np.kron(drift, np.ones((8, 8, 1))).astype(np.uint8))
    smooth = np.stack(frames)
    assert len(sink_collapse(smooth)["events"]) == 0
    snapped = smooth.copy()
    snapped[30:33] = snapped[0]  # three frames snap back to the opening
    out = sink_collapse(snapped)
    assert 30 in out["events"].tolist()
    d = sink_distance(snapped)
    assert np.isnan(d[:3]).all() and d[30] < 0.1
    assert collapse_events(np.ones(10), CollapseConfig()).tolist() == []


@pytest.mark.parametrize("bad", [{"long_rate": 0}, {"sink_frames": -1}])
def test_memrope_rejects_bad_settings(bad):
    with pytest.raises(ValueError):
        make_policy("memrope", **bad)


def test_quality_figure_shows_each_runs_sink_distance_and_its_collapses():
    from explorer.figures import quality_figure

    d = np.r_[np.nan, np.nan, np.nan, np.ones(20)]
    d[15] = 0.2
    fig = quality_figure(
        {"sink @ 1/8": np.full(23, 30.0)},
        sink={
            "full": {"distance": np.r_[np.nan * np.ones(3), np.ones(20)], "events": np.array([], int)},
            "sink @ 1/8": {"distance": d, "events": np.array([15])},
        },
    )
    names = [t.name for t in fig.data]
    assert "sink @ 1/8: distance to sink" in names and "full: distance to sink" in names
    marks = [t for t in fig.data if t.name == "sink @ 1/8: sink collapse"]
    assert len(marks) == 1 and list(marks[0].x) == [15]
    assert "full: sink collapse" not in names  # no event, no marker
    assert fig.layout.yaxis2.title.text.startswith("distance to sink")
