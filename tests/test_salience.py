"""PaFu-KV pieces: SSE components against brute force, the head, the policy, the training stage."""

import numpy as np
import pytest
import torch

from backend.policies import make_policy
from backend.salience import SalienceHead, SEHConfig, recall_at, spearman, sse_components, teacher_sse
from backend.stepper import Stepper


def brute_sse(p, block):
    H, N, _ = p.shape
    out = torch.zeros(3, N)
    for j in range(N):
        if block[j] < 0:
            continue
        for c, sel in enumerate([block > block[j], block == block[j], (block < block[j]) & (block >= 0)]):
            if sel.any():
                out[c, j] = p[:, sel, j].amax(1).mean()
    return out


def test_sse_components_match_brute_force():
    torch.manual_seed(0)
    block = torch.tensor([-1, -1, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    p = torch.rand(3, 11, 11).softmax(-1)
    assert torch.allclose(sse_components(p, block), brute_sse(p, block), atol=1e-6)


def test_sse_from_queries_and_keys_in_row_blocks_equals_the_full_probabilities():
    """The labels formed a few query rows at a time (a real Wan clip's N x N attention does not fit) equal the
    components of the whole probability matrix, with and without condition tokens in front."""
    from backend.salience import combine_sse, sse_from_qk

    torch.manual_seed(1)
    for n_prefix in (0, 2):
        block = torch.arange(4).repeat_interleave(5)  # 4 chunks of 5 frame tokens
        q, k = torch.randn(3, n_prefix + 20, 8), torch.randn(3, n_prefix + 20, 8)
        p = (q @ k.transpose(1, 2) / 8**0.5).softmax(-1)
        full = torch.cat([torch.full((n_prefix,), -1), block])
        want = combine_sse(sse_components(p, full))[n_prefix:]
        got = sse_from_qk(q, k, n_prefix, block, rows=3)
        assert got.shape == (20,) and torch.allclose(got, want, atol=1e-5)


def test_teacher_sse_labels_cover_every_frame_token(tiny):
    lat = torch.randn(3, tiny.cfg.latent_ch, tiny.cfg.grid, tiny.cfg.grid)
    labels = teacher_sse(tiny, torch.arange(tiny.cfg.n_prompt), lat)
    assert len(labels) == tiny.cfg.n_layer
    for lab in labels:
        assert lab.shape == (3 * tiny.cfg.tokens_per_frame,) and (lab >= 0).all() and lab.max() > 0


def test_pafu_policy_uses_the_head_and_respects_the_budget(tiny, ae):
    tpf, P = tiny.cfg.tokens_per_frame, tiny.cfg.n_prompt
    head = SalienceHead(SEHConfig(n_layer=tiny.cfg.n_layer, key_dim=tiny.cfg.dim, grid=tiny.cfg.grid))
    pol = make_policy("pafu", budget=P + 3 * tpf, head=head, alpha=0.0)
    st = Stepper(tiny, ae, "a red circle on blue stripes", 6, seed=1, policy=pol, preview=False)
    recs = list(st.run())
    assert all((r.occupancy <= P + 3 * tpf).all() for r in recs if r.phase == "evict")
    m = st.cache.layers[0].meta
    assert (pol.scorer.predictions()[0][m["kind"] == 1] != 0).all() and recs[-1].timings["head_ms"] > 0
    # alpha = 0: the kept old tokens are the head's top picks
    ev = [r for r in recs if r.phase == "evict"][-1]
    assert ev.scores[0] is not None


def test_pafu_batched_tail_scoring_equals_scoring_each_layer(tiny, ae):
    """After every commit PaFu-KV scores the appended tail of all layers in one batched pass; the
    predictions equal the per-layer path's (float rounding), and a run with no record of scoring this cache
    (its observer's notes) takes the full path."""
    import copy

    tpf, P = tiny.cfg.tokens_per_frame, tiny.cfg.n_prompt
    torch.manual_seed(3)
    head = SalienceHead(SEHConfig(n_layer=tiny.cfg.n_layer, key_dim=tiny.cfg.dim, grid=tiny.cfg.grid))
    pol = make_policy("pafu", budget=P + 3 * tpf, head=head)
    st = Stepper(tiny, ae, "a red circle on blue stripes", 7, seed=1, policy=pol, preview=False)
    list(st.run())
    fast = [p.clone() for p in pol.scorer.predictions()]
    slow = [torch.zeros_like(p) for p in fast]
    head.predict_cache(st.cache, slow, only_new=True)
    for a, b, layer in zip(fast, slow, st.cache.layers):
        assert torch.allclose(a, b, atol=1e-5) and bool((a[layer.meta["kind"] == 1] != 0).all())
    other = copy.deepcopy(pol.scorer)  # a run that never scored this cache: the tail shortcut must not apply
    branch = st.observer.clone()
    branch.notes.clear()
    for p in branch.extra["pred"]:
        p.zero_()
    other.bind(branch)
    from backend.policies import EvictContext

    ctx = EvictContext(st.chunk, (st.chunk, st.chunk), tpf, tiny.cfg.grid, tiny.rotate)
    other.prepare(st.cache, ctx)
    assert all(bool((p[layer.meta["kind"] == 1] != 0).all()) for p, layer in zip(other.predictions(), st.cache.layers))


def test_pafu_recent_share_keeps_a_recency_window(tiny, ae):
    """recent_share reserves that share of the budget's frames for the newest frames (never evicted), the
    rest goes by salience; a share that leaves no room is rejected before any work."""
    tpf, P = tiny.cfg.tokens_per_frame, tiny.cfg.n_prompt
    torch.manual_seed(4)
    head = SalienceHead(SEHConfig(n_layer=tiny.cfg.n_layer, key_dim=tiny.cfg.dim, grid=tiny.cfg.grid))
    pol = make_policy("pafu", budget=P + 6 * tpf, head=head, recent_share=0.5, sink_frames=0)
    assert pol.scorer.recent_window(tpf, pol.budget) == 3
    st = Stepper(tiny, ae, "a red circle on blue stripes", 12, seed=1, policy=pol, preview=False)
    for rec in st.run():
        if rec.phase == "evict" and rec.chunk >= 6:
            for kept in rec.kept:
                frames = set(((kept[kept >= P] - P) // tpf).tolist())
                assert {rec.chunk - 2, rec.chunk - 1, rec.chunk} <= frames and len(frames) <= 6
    with pytest.raises(ValueError, match="below"):
        make_policy("pafu", budget=P + 4 * tpf, head=head, recent_share=0.9, sink_frames=1).check(P + 1, tpf, 1)


def test_pafu_strata_spreads_the_kept_frames_over_time(tiny, ae):
    """granularity=strata through the stepper: whole frames within the budget, and the kept history
    spreads over the video even when the score favours the oldest frames (heavy hitters that frame
    granularity would keep for ever: frames 1-3 of 14)."""
    tpf, P = tiny.cfg.tokens_per_frame, tiny.cfg.n_prompt
    torch.manual_seed(5)
    head = SalienceHead(SEHConfig(n_layer=tiny.cfg.n_layer, key_dim=tiny.cfg.dim, grid=tiny.cfg.grid))
    kept_free = {}
    for gran in ("frame", "strata"):
        pol = make_policy("pafu", budget=P + 5 * tpf, head=head, granularity=gran, period=1)
        pol.scorer.score = lambda li, layer, ctx: -layer.meta["frame"].float()  # older = more salient
        st = Stepper(tiny, ae, "a red circle on blue stripes", 14, seed=1, policy=pol, preview=False)
        for rec in st.run():
            if rec.phase == "evict":
                for kept in rec.kept:
                    fr = (kept[kept >= P] - P) // tpf
                    assert all((fr == f).sum() == tpf for f in np.unique(fr)) and len(np.unique(fr)) <= 5
        kept_free[gran] = sorted(set(((rec.kept[0][rec.kept[0] >= P] - P) // tpf).tolist()) - {0, 13})
    assert kept_free["frame"] == [1, 2, 3]
    assert len(kept_free["strata"]) == 3 and max(kept_free["strata"]) >= 7, kept_free


def test_rank_metrics():
    a = np.arange(100.0)
    assert spearman(a, a) > 0.999 and spearman(a, -a) < -0.999
    assert recall_at(a, a) == 1.0 and recall_at(-a, a) == 0.0


def test_hindsight_labels_are_the_students_future_attention(tiny):
    """`--labels hindsight`: per layer, attention from later queries of the clip, max-normalised; the newest
    frame has been seen by its own commit only, the oldest by every later one."""
    from backend.salience import student_keys
    from backend.train.salience import hindsight_labels

    lat = torch.randn(4, tiny.cfg.latent_ch, tiny.cfg.grid, tiny.cfg.grid)
    cache, observed = student_keys(tiny, torch.arange(tiny.cfg.n_prompt), lat)
    labels = hindsight_labels(cache, observed)
    assert len(labels) == tiny.cfg.n_layer
    for layer, s, lab in zip(cache.layers, observed.stats, labels):
        m = layer.meta
        assert lab.shape == (4 * tiny.cfg.tokens_per_frame,) and torch.isclose(lab.max(), torch.tensor(1.0))
        seen = s["attn_count"][m["kind"] == 1].view(4, -1)[:, 0]
        assert (seen.diff() < 0).all()  # older tokens were seen by more queries


def test_pafu_labels_choose_the_head_file_and_are_validated():
    import pytest

    from backend.policies.pafu import PaFu

    assert PaFu(labels="hindsight").signature_files()[0].endswith("salience_head_hindsight.safetensors")
    assert PaFu().signature_files()[0].endswith("salience_head.safetensors")
    with pytest.raises(ValueError, match="labels"):
        PaFu(labels="teacher")
