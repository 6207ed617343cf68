"""kvpress-style matrix: every policy x budgets x granularity, driven through the real stepper."""

import numpy as np
import pytest
import torch
from budgets import within

from backend.policies import POLICIES, BudgetError, make_policy, parse_budget
from backend.stepper import GenerationError, Stepper

PROMPT = "a red circle and a square on blue stripes behind a wall"
N_FRAMES = 7
BOUNDED = [n for n in POLICIES if n not in ("full", "oracle", "pafu")]


def run(tiny, ae, policy, n=N_FRAMES, seed=4):
    st = Stepper(tiny, ae, PROMPT, n, seed=seed, policy=policy, preview=False)
    return st, list(st.run())


@pytest.mark.parametrize("name", BOUNDED)
@pytest.mark.parametrize("frames_budget", [2, 3.5])
@pytest.mark.parametrize("granularity", ["token", "frame"])
def test_matrix_budget_protection_alignment_determinism(tiny, ae, name, frames_budget, granularity):
    tpf, P = tiny.cfg.tokens_per_frame, tiny.cfg.n_prompt
    if granularity not in POLICIES[name].scorer.granularities:
        pytest.skip(f"{name} does not work at {granularity} granularity")
    kw = {"granularity": granularity}
    if name in ("sink", "deep_forcing"):
        kw["sink_frames"] = 1
    if name == "deep_forcing":
        kw["recent_frames"] = 1
    least = make_policy(name, **kw).min_budget(P, tpf, tiny.cfg.chunk_frames)  # derived from what it protects
    budget = max(P + int(frames_budget * tpf), least)
    st, recs = run(tiny, ae, make_policy(name, budget=budget, **kw))
    for r in recs:
        if r.phase == "evict":
            assert within(r, budget), (name, r.occupancy, r.heads, budget)
            kept = r.kept[0]
            assert set(range(P)) <= set(kept)  # prompt anchors are never evicted
            newest = {P + f * tpf + i for f in range(*r.frames) for i in range(tpf)}
            admit = make_policy(name, **kw).settings.admit  # write-time admission refuses some of it
            assert len(newest & set(kept)) >= len(newest) - int(admit * len(newest))  # nor is the newest chunk
            if name in ("sink", "deep_forcing") and r.chunk >= 1:
                assert set(range(P, P + tpf)) <= set(kept)  # nor the sink frame
            if granularity == "frame" and not admit:  # (refused tokens leave partial frames)
                fr = (kept[kept >= P] - P) // tpf
                assert all((fr == f).sum() == tpf for f in np.unique(fr))  # whole frames only
    for layer in st.cache.layers:
        for v in layer.meta.values():
            assert v.shape[0] == len(layer)
        assert layer.k.shape[1] == len(layer)
    st2, _ = run(tiny, ae, make_policy(name, budget=budget, **kw))
    np.testing.assert_array_equal(st.frames, st2.frames)


def test_window_with_budget_above_length_equals_full(tiny, ae):
    full, _ = run(tiny, ae, make_policy("full"))
    big, _ = run(tiny, ae, make_policy("window", budget=10_000))
    np.testing.assert_array_equal(full.frames, big.frames)
    wide, _ = run(tiny, ae, make_policy("window", frames=N_FRAMES))
    np.testing.assert_array_equal(full.frames, wide.frames)


def test_sink_with_zero_sink_equals_window(tiny, ae):
    tpf, P = tiny.cfg.tokens_per_frame, tiny.cfg.n_prompt
    a, _ = run(tiny, ae, make_policy("sink", budget=P + 3 * tpf, sink_frames=0))
    b, _ = run(tiny, ae, make_policy("window", frames=3))
    c, _ = run(tiny, ae, make_policy("window", budget=P + 3 * tpf))
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(b.frames, c.frames)


@pytest.mark.parametrize(
    "text,kind,value",
    [
        ("2048", "tokens", 2048),
        ("8f", "frames", 8),
        ("12.5%", "share", 12.5),
        ("512KB", "bytes", 512 * 1024),
        ("2MB", "bytes", 2 << 20),
    ],
)
def test_parse_budget(text, kind, value):
    b = parse_budget(text)
    assert (b.kind, b.value) == (kind, value)


@pytest.mark.parametrize("bad", ["0", "-5", "abc", "12.5", "150%", "3x", "", True])
def test_bad_budgets_are_rejected(bad):
    with pytest.raises(BudgetError):
        parse_budget(bad)


def test_budget_conversions():
    kw = dict(n_prompt=7, tokens_per_frame=64, n_frames=256, n_layer=4, bytes_per_token=1024)
    assert parse_budget("8f").tokens(**kw) == 7 + 8 * 64
    assert parse_budget("50%").tokens(**kw) == round(0.5 * (7 + 256 * 64))
    assert parse_budget("1MB").tokens(**kw) == (1 << 20) // (4 * 1024)


def test_byte_budget_counts_the_storage_dtype(tiny, ae):
    """A byte budget buys more tokens at int4 than at fp32, and the cache holds to it: peak bytes after
    every eviction at most the budget (window keeps whole frames, so every key-scale group is full)."""
    from backend.build import build_policy
    from backend.policies.build import budget_tokens

    n = 10
    fp32 = budget_tokens("60KB", tiny.geometry, n)
    int4 = budget_tokens("60KB", tiny.geometry, n, storage="int4")
    assert int4 > 2 * fp32
    pol = build_policy("window", "60KB", n, tiny, params={"storage": "int4"})
    assert pol.budget == int4
    _, recs = run(tiny, ae, pol, n=n)
    peak = max(int(r.nbytes.sum()) for r in recs if r.phase == "evict")
    assert 0.8 * 60 * 1024 < peak <= 60 * 1024


def test_budget_below_protected_is_rejected_before_work(tiny, ae):
    with pytest.raises(GenerationError, match="at least"):
        Stepper(tiny, ae, PROMPT, 5, policy=make_policy("h2o", budget=10))
    with pytest.raises(GenerationError, match="at least"):
        Stepper(tiny, ae, PROMPT, 5, policy=make_policy("sink", budget=7 + 64 * 2, sink_frames=3))
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError):
            make_policy("tova", budget=bad)
    with pytest.raises(KeyError):
        make_policy("nope")
    with pytest.raises(ValueError, match="parameter"):
        make_policy("tova", frames=3)
    for name in ("snapkv", "flowcache"):  # pooling kernels are odd cell counts
        for bad in (0, 2, -1, 1.5):
            with pytest.raises(ValueError, match="kernel"):
                make_policy(name, kernel=bad)


def _duplicate_frames(tiny, n=4):
    """A cache of the prompt plus n one-token frames that all carry the same key and position (every layer),
    with different values."""
    from backend.cache import KVCache

    cfg = tiny.cfg
    cache = KVCache(cfg.n_layer, cfg.n_head, cfg.head_dim)
    tiny.prefill(torch.arange(cfg.n_prompt), cache)
    for layer in cache.layers:
        k = torch.randn(cfg.n_head, 1, cfg.head_dim).repeat(1, n, 1)
        layer.append(
            k,
            torch.randn(cfg.n_head, n, cfg.head_dim),
            {
                "frame": torch.arange(n),
                "kind": torch.ones(n),
                "pos": torch.tensor([[5, 1, 2]] * n),
                "token_id": 100 + torch.arange(n),
            },
        )
    return cache


def test_tempcache_merge_is_exact_on_identical_keys(tiny):
    """TempCache Lemma 5.1: identical keys -> one representative with +log(count) and the mean value."""
    torch.manual_seed(0)
    cfg = tiny.cfg
    cache = _duplicate_frames(tiny, 3)  # 3 duplicates of one key (same key and position), 3 values
    x = torch.randn(1, cfg.latent_ch, cfg.grid, cfg.grid)
    before = tiny.forward_chunk(x, torch.tensor([0.5]), 3, cache)
    for layer in cache.layers:
        n = len(layer)
        merged = layer.merge(torch.tensor([n - 3, n - 2]), torch.tensor([n - 1, n - 1]))
        assert sorted(merged.tolist()) == [100, 101] and layer.meta["count"][-1] == 3
    after = tiny.forward_chunk(x, torch.tensor([0.5]), 3, cache)
    assert torch.allclose(before, after, atol=1e-5)
    for layer in cache.layers:  # but not when the keys differ
        layer.k[:, -1] += 3.0
        layer._krot = None  # direct mutation: drop the rotated-key memo
    assert not torch.allclose(before, tiny.forward_chunk(x, torch.tensor([0.5]), 3, cache), atol=1e-3)


@pytest.mark.parametrize("merge_at", ["commit", "evict"])
def test_tempcache_merges_at_every_commit_or_only_when_the_keep_runs(tiny, merge_at):
    """merge_at=commit merges every older duplicate into the newest chunk at each commit; merge_at=evict
    merges nothing while the cache fits its budget, and once over it merges into the `period` newest chunks."""
    from backend.policies import EvictContext

    torch.manual_seed(0)
    P = tiny.cfg.n_prompt
    ctx = EvictContext(chunk=3, newest_frames=(3, 3), tokens_per_frame=1)
    for budget, expect in (
        (P + 10, {"commit": [100, 101, 102], "evict": []}),
        (P + 3, {"commit": [100, 101, 102], "evict": [100, 101]}),
    ):
        cache = _duplicate_frames(tiny)
        pol = make_policy("tempcache", budget=budget, merge_at=merge_at, period=2)
        out = pol.evict(cache, ctx)
        assert all(sorted(e.evicted.tolist()) == expect[merge_at] for e in out)
        counts = cache.layers[0].meta["count"][P:]
        assert counts.sum() == 4 and counts.max() == 1 + len(expect[merge_at])
        assert all(len(layer) <= budget for layer in cache.layers)
    with pytest.raises(ValueError, match="merge_at"):
        make_policy("tempcache", merge_at="never")


def test_flowcache_redundancy_prefers_distinct_keys():
    import torch.nn.functional as F

    from backend.policies.flowcache import redundancy

    k = torch.randn(2, 6, 8)
    k[:, 1] = k[:, 0]
    k[:, 2] = k[:, 0] * 2  # three copies of one direction
    r = redundancy(k)
    assert r[:3].min() > r[3:].max() and torch.isclose(r.sum(), torch.tensor(1.0))
    k = torch.randn(4, 300, 16)  # the O(n d) form equals the mean of the cosine matrix
    u = F.normalize(k.transpose(0, 1).reshape(300, -1), dim=1)
    cos = u @ u.T
    expect = ((cos.sum(1) - cos.diagonal()) / 299).softmax(0)
    assert torch.allclose(redundancy(k), expect, rtol=1e-4, atol=1e-9)


def test_tempcache_nearest_equals_a_brute_force_cosine_search():
    import torch.nn.functional as F

    from backend.policies.tempcache import nearest

    g = torch.Generator().manual_seed(3)
    k = torch.randn(4, 200, 8, generator=g) * torch.rand(1, 200, 1, generator=g) * 5  # rows of many norms
    targets = torch.arange(150, 200)
    best, arg = nearest(k, targets.numpy())
    u = F.normalize(k.transpose(0, 1).reshape(200, -1), dim=1)
    cos = u @ u[targets].T  # (n, m)
    assert torch.equal(torch.from_numpy(arg), cos.argmax(1))
    assert torch.allclose(torch.from_numpy(best), cos.max(1).values, atol=1e-5)
    assert torch.allclose(torch.from_numpy(best[150:]), torch.ones(50), atol=1e-5)  # each target finds itself


def test_packcache_fits_decay_and_water_fills():
    from backend.policies.packcache import fit_rho, water_fill

    d = np.arange(1, 9)
    assert abs(fit_rho(d, 0.7**d, 0.1, 0.999) - 0.7) < 1e-6
    assert fit_rho(d, 0.2**d, 0.5, 0.99) == 0.5 and fit_rho(d[:1], d[:1], 0.5, 0.99) == 0.99  # clamped; one frame
    alloc = water_fill(torch.tensor([8.0, 4.0, 2.0, 1.0]), torch.tensor([5, 5, 5, 5]), 12)
    assert int(alloc.sum()) == 12 and (alloc <= 5).all() and alloc[0] >= alloc[1] >= alloc[2] >= alloc[3]


def test_water_fill_spends_the_total_within_caps_and_favours_heavier_entries():
    """Random weights (many ties), caps and totals: the allocation sums to min(total, caps), stays within
    the caps, and an entry with room never gets two or more fewer tokens than a lighter one."""
    from backend.policies.layer_split import water_fill

    g = torch.Generator().manual_seed(5)
    for trial in range(400):
        n = int(torch.randint(1, 30, (1,), generator=g))
        w = torch.rand(n, generator=g) if trial % 2 else torch.randint(1, 4, (n,), generator=g).float()
        caps = torch.randint(0, 50, (n,), generator=g)
        total = int(torch.randint(0, int(caps.sum()) + 20, (1,), generator=g))
        a = torch.from_numpy(water_fill(w, caps, total))
        assert a.dtype == caps.dtype and int(a.sum()) == min(total, int(caps.sum()))
        assert bool((a >= 0).all()) and bool((a <= caps).all())
        room = a < caps
        heavier = w[:, None] >= w[None, :]  # (i, j): w_i >= w_j
        assert not bool((room[:, None] & heavier & (a[:, None] < a[None, :] - 1)).any()), (w, caps, total, a)


def test_packcache_rank_within_matches_per_group_topk():
    """The vectorised per-frame top-b equals a per-frame loop (ranks 0.. by value, higher slot first on ties)."""
    from backend.policies.packcache import rank_within

    g = torch.Generator().manual_seed(0)
    group = torch.arange(5).repeat_interleave(40)
    slot = torch.cat([torch.randperm(64, generator=g)[:40] for _ in range(5)])  # unique cells per group
    perm = torch.randperm(200, generator=g)  # cache order is not time order
    group, slot = group[perm], slot[perm]
    value = torch.randint(0, 6, (200,), generator=g).float()  # many ties
    rank = torch.from_numpy(rank_within(group.numpy(), slot.numpy(), value.numpy(), 64))
    for f in range(5):
        idx = (group == f).nonzero().flatten()
        expect = sorted(idx.tolist(), key=lambda i: (-value[i].item(), -slot[i].item()))
        assert [i for _, i in sorted(zip(rank[idx].tolist(), idx.tolist()))] == expect


@pytest.mark.parametrize("within", ["attention", "grid"])
def test_packcache_keeps_each_frames_allocation(tiny, ae, within):
    """Each evicted-from frame keeps exactly its water-filled share of tokens, decaying with distance."""

    pol = make_policy("packcache", budget=tiny.cfg.n_prompt + 6 * tiny.cfg.tokens_per_frame, within=within)
    st, _ = run(tiny, ae, pol, n=12, seed=0)
    layer = st.cache.layers[0]
    per_frame = torch.bincount(layer.meta["frame"][layer.meta["kind"] == 1])
    assert len(layer) == pol.budget and int(per_frame[-1]) == tiny.cfg.tokens_per_frame
    assert (per_frame[:-1].diff() >= -1).all()  # older frames keep no more (rho <= 1)


def test_rope_realignment_equals_recomputing_with_shifted_positions(tiny):
    """Rewriting stored positions re-rotates the cached keys exactly as recomputing them would."""
    from backend.cache import LayerCache
    from backend.policies.rope_modes import reindex, shift_sink

    layer = LayerCache.empty(tiny.cfg.n_head, tiny.cfg.head_dim)
    frames = torch.tensor([0, 0, 1, 5, 5, 9])
    pos = torch.stack([frames + 1, torch.arange(6) % 4, torch.arange(6) % 3], 1)
    k = torch.randn(tiny.cfg.n_head, 6, tiny.cfg.head_dim)
    layer.append(k, k.clone(), {"frame": frames, "kind": torch.ones(6), "pos": pos})
    layer.rotated_keys(tiny.rotate)
    reindex(layer)
    assert layer.meta["pos"][:, 0].tolist() == [7, 7, 8, 9, 9, 10]  # contiguous, newest keeps t = 10
    assert torch.equal(layer.meta["pos"][:, 1:], pos[:, 1:])  # spatial positions untouched
    assert torch.allclose(layer.rotated_keys(tiny.rotate), tiny.rotate(k, layer.meta["pos"]), atol=1e-6)
    # rotations compose: rotating the old rotated keys by the shift equals rotating from scratch
    shift = layer.meta["pos"] - pos
    assert torch.allclose(tiny.rotate(tiny.rotate(k, pos), shift), layer.rotated_keys(tiny.rotate), atol=1e-5)
    layer2 = LayerCache.empty(tiny.cfg.n_head, tiny.cfg.head_dim)
    layer2.append(k, k.clone(), {"frame": frames, "kind": torch.ones(6), "pos": pos})
    shift_sink(layer2, sink_frames=2)  # frames 0, 1 move next to frame 5
    assert layer2.meta["pos"][:, 0].tolist() == [4, 4, 5, 6, 6, 10]


def test_deep_forcing_keeps_sink_and_recent_and_realigns(tiny, ae):
    tpf, P = tiny.cfg.tokens_per_frame, tiny.cfg.n_prompt
    st, recs = run(tiny, ae, make_policy("deep_forcing", budget=P + 5 * tpf, sink_frames=2, recent_frames=2), n=9)
    layer = st.cache.layers[0]
    fr = layer.meta["frame"]
    assert {0, 1, 7, 8} <= set(fr.tolist())
    t = layer.meta["pos"][fr >= 0, 0].unique()
    assert torch.equal(t, torch.arange(int(t.min()), int(t.max()) + 1))  # contiguous temporal positions
    assert int(t.max()) == 9  # newest frame 8 at t = 9


def test_oracle_uses_the_reference_and_beats_random_on_its_own_signal(tiny, ae):
    from backend.build import reference_scores

    tpf, P = tiny.cfg.tokens_per_frame, tiny.cfg.n_prompt
    ref = reference_scores(tiny, ae, PROMPT, N_FRAMES, seed=4)
    assert len(ref) == tiny.cfg.n_layer and len(ref[0]) == P + N_FRAMES * tpf
    budget = P + 3 * tpf
    st, recs = run(tiny, ae, make_policy("oracle", budget=budget, reference=ref))
    ev = [r for r in recs if r.phase == "evict"]
    assert all((r.occupancy <= budget).all() for r in ev)
    kept_mass = sum(ref[0][k].sum() for k in (r.kept[0] for r in ev))
    st2, recs2 = run(tiny, ae, make_policy("random", budget=budget))
    kept_mass_random = sum(ref[0][r.kept[0]].sum() for r in recs2 if r.phase == "evict")
    assert kept_mass > kept_mass_random
    with pytest.raises(ValueError, match="reference"):
        run(tiny, ae, make_policy("oracle", budget=budget))


def test_kv_quantization_storage_and_exact_bytes(tiny, ae):
    from backend.cache import DTYPES

    tpf, P, L = tiny.cfg.tokens_per_frame, tiny.cfg.n_prompt, tiny.cfg.n_layer
    H, Dh = tiny.cfg.n_head, tiny.cfg.head_dim
    full, _ = run(tiny, ae, make_policy("full"))
    q8, _ = run(tiny, ae, make_policy("full", storage="int8"))
    q2, _ = run(tiny, ae, make_policy("full", storage="int2"))
    mixed, _ = run(
        tiny, ae, make_policy("h2o", budget=P + 4 * tpf, storage="int2", salient_storage="int8", salient_share=0.5)
    )
    per = lambda bits: 2 * ((H * Dh * bits + 7) // 8) + (H * 4 if bits < 16 else 0)  # noqa: E731
    n_old = (N_FRAMES - 1) * tpf  # one key-scale group (H * Dh fp16 scale + zero) per older frame
    assert q8.cache.nbytes() == [P * per(32) + tpf * per(32) + n_old * per(8) + (N_FRAMES - 1) * H * Dh * 4] * L
    q8t, _ = run(tiny, ae, make_policy("full", storage="int8", quant="token"))
    per_t = lambda bits: 2 * ((H * Dh * bits + 7) // 8 + (4 if bits < 16 else 0))  # noqa: E731
    assert q8t.cache.nbytes() == [P * per_t(32) + tpf * per_t(32) + n_old * per_t(8)] * L
    assert sum(q2.cache.nbytes()) < sum(q8.cache.nbytes()) < sum(full.cache.nbytes())
    codes = mixed.cache.layers[0].meta["dtype"]
    assert {int(c) for c in codes.unique()} == {DTYPES["fp32"][0], DTYPES["int8"][0], DTYPES["int2"][0]}
    d8 = np.abs(q8.frames.astype(int) - full.frames).mean()
    d2 = np.abs(q2.frames.astype(int) - full.frames).mean()
    assert d8 < d2  # more bits, closer to the fp32 run
    with pytest.raises(ValueError, match="storage"):
        make_policy("full", storage="int3")
    with pytest.raises(ValueError, match="quant"):
        make_policy("full", storage="int4", quant="tensor")
    # KIVI's full-precision residual: the 2 frames before the newest chunk stay fp32, the rest int8
    q8r, _ = run(tiny, ae, make_policy("full", storage="int8", residual=2))
    n_res = 2 * tpf
    assert (
        q8r.cache.nbytes()
        == [P * per(32) + (tpf + n_res) * per(32) + (n_old - n_res) * per(8) + (N_FRAMES - 3) * H * Dh * 4] * L
    )
    frames = q8r.cache.layers[0].meta["frame"]
    assert set(frames[codes_of(q8r) == 0].tolist()) >= {N_FRAMES - 3, N_FRAMES - 2, N_FRAMES - 1}
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="residual"):
            make_policy("full", storage="int4", residual=bad)


def codes_of(st):
    return st.cache.layers[0].meta["dtype"]


def test_byte_budget_counts_the_full_precision_residual(tiny, ae):
    """With a residual, a byte budget buys fewer tokens (the residual is fp32) and the cache holds to it."""
    from backend.build import build_policy
    from backend.policies.build import budget_tokens

    n = 32
    plain = budget_tokens("140KB", tiny.geometry, n, storage="int4")
    res = budget_tokens("140KB", tiny.geometry, n, storage="int4", residual=2)
    assert res < plain
    pol = build_policy("window", "140KB", n, tiny, params={"storage": "int4", "residual": 2})
    assert pol.budget == res
    _, recs = run(tiny, ae, pol, n=n)
    peak = max(int(r.nbytes.sum()) for r in recs if r.phase == "evict")
    assert 0.8 * 140 * 1024 < peak <= 140 * 1024


@pytest.mark.parametrize("split", ["cake", "prefixkv"])
def test_layer_split_spends_the_total_budget(tiny, ae, split):
    tpf, P, L = tiny.cfg.tokens_per_frame, tiny.cfg.n_prompt, tiny.cfg.n_layer
    budget = P + 3 * tpf
    st, recs = run(tiny, ae, make_policy("h2o", budget=budget, layer_split=split, period=1), n=8)
    ev = [r for r in recs if r.phase == "evict" and r.chunk >= 4]
    min_layer = P + 2 * tpf  # prompt + the 2 protected recent frames
    for r in ev:
        assert r.occupancy.sum() <= L * budget
        assert r.occupancy.sum() >= L * budget - L  # the budget is spent (up to rounding)
        assert (r.occupancy >= min_layer).all()
    with pytest.raises(ValueError, match="layer_split"):
        make_policy("h2o", budget=budget, layer_split="nope")
    st, recs = run(tiny, ae, make_policy("h2o", budget=budget, layer_split=split, period=2), n=8)
    for r in recs:  # a tight layer's periodic target stops at its protected size
        if r.phase == "evict" and r.chunk >= 4:
            assert r.occupancy.sum() <= L * budget and (r.occupancy >= min_layer).all()


@pytest.mark.parametrize("name", ["tova", "flowcache", "h2o", "deep_forcing"])
def test_period_evicts_every_other_chunk_and_never_exceeds_the_budget(tiny, ae, name):
    """period=2: once over budget the keep goes one chunk below it, so it runs on alternate chunks in the
    steady state and occupancy after every eviction step stays within the budget."""
    tpf, P = tiny.cfg.tokens_per_frame, tiny.cfg.n_prompt
    kw = {"sink_frames": 1, "recent_frames": 1} if name == "deep_forcing" else {}
    budget = P + 4 * tpf
    st, recs = run(tiny, ae, make_policy(name, budget=budget, period=2, **kw), n=12)
    evicts = [r for r in recs if r.phase == "evict"]
    assert all((r.occupancy <= budget).all() for r in evicts)
    fired = [bool(len(r.evicted[0])) for r in evicts]
    first = fired.index(True)
    assert fired[first:] == [True, False] * ((len(fired) - first) // 2) + [True] * ((len(fired) - first) % 2)
    assert [int(r.occupancy[0]) for r in evicts[first : first + 2]] == [budget - tpf, budget]
    _, every = run(tiny, ae, make_policy(name, budget=budget, period=1, **kw), n=12)
    assert sum(bool(len(r.evicted[0])) for r in every if r.phase == "evict") > sum(fired)


def test_period_is_validated_and_a_tight_budget_caps_it(tiny, ae):
    """A budget with room for fewer than period - 1 chunks above the protected size is accepted: the keep
    stops at the protected size, so period=3 with one chunk of room evicts every second chunk."""
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="period"):
            make_policy("tova", period=bad)
    tpf, P = tiny.cfg.tokens_per_frame, tiny.cfg.n_prompt
    with pytest.raises(GenerationError, match=f"use at least {P + tpf}"):
        Stepper(tiny, ae, PROMPT, 5, policy=make_policy("tova", budget=P + tpf - 1, period=3))
    budget = P + 2 * tpf
    _, recs = run(tiny, ae, make_policy("tova", budget=budget, period=3), n=10)
    evicts = [r for r in recs if r.phase == "evict"]
    assert all((r.occupancy <= budget).all() for r in evicts)
    assert all((r.occupancy >= P + tpf).all() for r in evicts)  # never below the protected size
    fired = [bool(len(r.evicted[0])) for r in evicts]
    assert fired[2:] == [True, False] * 4  # capped at one chunk of room


@pytest.mark.parametrize("period", [1, 2])
def test_newest_chunk_readers_record_statistics_only_before_an_eviction(tiny, ae, period):
    """TOVA reads only the newest commit's attention: skipping the statistics of commits after which it keeps
    everything (cache filling, between periodic evictions) changes no frame, and only evicting commits pay."""
    tpf, P = tiny.cfg.tokens_per_frame, tiny.cfg.n_prompt

    def pol():
        return make_policy("tova", budget=P + 3 * tpf, period=period, probe=0.5)

    lazy = Stepper(tiny, ae, PROMPT, 10, seed=2, policy=pol(), preview=False)
    eager = Stepper(tiny, ae, PROMPT, 10, seed=2, policy=pol(), preview=False, attention="probs")
    lazy_recs, eager_recs = list(lazy.run()), list(eager.run())
    np.testing.assert_array_equal(lazy.frames, eager.frames)
    commits = [r for r in lazy_recs if r.phase == "commit"]
    evicts = [r for r in lazy_recs if r.phase == "evict"]
    recorded = [r.stats_ms != 0 for r in commits]
    assert recorded == [bool(len(r.evicted[0])) for r in evicts]  # statistics exactly where the keep runs
    assert not all(recorded) and any(recorded)
    assert all(r.stats_ms != 0 for r in eager_recs if r.phase == "commit")
    assert not make_policy("h2o").lazy_stats  # H2O accumulates every commit's attention
    assert not make_policy("tova", layer_split="cake").lazy_stats


def learned_parts(tiny, ae, name: str, frames: int) -> dict:
    """What a policy needs beyond its settings on the tiny model: the oracle's full-cache reference of
    `frames` frames, PaFu-KV a seeded random salience head of the tiny model's shape."""
    if name == "oracle":
        from backend.build import reference_scores

        return {"reference": reference_scores(tiny, ae, PROMPT, frames, 4)}
    if name == "pafu":
        from backend.salience import SalienceHead, SEHConfig

        torch.manual_seed(0)
        return {"head": SalienceHead(SEHConfig(n_layer=tiny.cfg.n_layer, key_dim=tiny.cfg.dim, grid=tiny.cfg.grid))}
    return {}


@pytest.mark.parametrize("name", [n for n in POLICIES if n != "full"])
def test_every_policy_runs_at_its_derived_minimum_budget(tiny, ae, name):
    """The minimum budget is derived from what the policy protects, so a run at exactly that budget holds it
    after every eviction (Deep Forcing stated a minimum below its own protected sink: rejected mid-run), and one
    token less is refused before any work."""
    tpf, P, cf = tiny.cfg.tokens_per_frame, tiny.cfg.n_prompt, tiny.cfg.chunk_frames
    extra = learned_parts(tiny, ae, name, 9)
    least = make_policy(name, **extra).min_budget(P, tpf, cf)
    st, recs = run(tiny, ae, make_policy(name, budget=least, **extra), n=9)
    assert all(within(r, least) for r in recs if r.phase == "evict")
    with pytest.raises(GenerationError, match="below"):
        run(tiny, ae, make_policy(name, budget=least - 1, **extra))


# scored policies whose keep is the top of their score (PackCache allocates per frame by decay and TempCache's
# recency ties within a frame at token level: neither keeps a plain top-k of one score)
TOP_K = {
    "h2o": "token",
    "tova": "token",
    "snapkv": "token",
    "flowcache": "token",
    "random": "token",
    "deep_forcing": "token",
    "oracle": "token",
    "pafu": "token",
    "window": "frame",
    "sink": "frame",
}


@pytest.mark.parametrize("name", sorted(TOP_K))
def test_the_score_drives_the_keep_a_reversed_score_keeps_the_complement(tiny, ae, name):
    """Of the evictable tokens, a policy keeps the best-scored half; with its score reversed it keeps exactly
    the other half (whole frames at frame granularity)."""
    from backend.policies import EvictContext

    tpf = tiny.cfg.tokens_per_frame
    kw = {"granularity": TOP_K[name], **learned_parts(tiny, ae, name, 8)}
    if name in ("sink", "deep_forcing"):
        kw["sink_frames"] = 1
    pol = make_policy(name, budget=10**6, **kw)  # never evicts: the cache holds all 8 frames
    st = Stepper(tiny, ae, PROMPT, 8, seed=4, policy=pol, preview=False, attention="probs")  # every commit's
    list(st.run())
    ctx = EvictContext(7, (7, 7), tpf, tiny.cfg.grid, tiny.rotate, budget=pol.budget, period=pol.period)
    scorer = pol.scorer
    scorer.prepare(st.cache, ctx)
    layer = st.cache.layers[1]
    prot = scorer.protected(layer, ctx).numpy()
    free = np.flatnonzero(~prot)
    half = len(free) // 2 // tpf * tpf  # whole frames
    budget = int(prot.sum()) + half
    keep, scores = scorer.keep(1, layer, ctx, budget, pol.selector)
    orig = scorer.score
    scorer.score = lambda i, lay, c: -orig(i, lay, c)
    keep_rev, _ = scorer.keep(1, layer, ctx, budget, pol.selector)
    a, b = set(keep.tolist()) - set(np.flatnonzero(prot)), set(keep_rev.tolist()) - set(np.flatnonzero(prot))
    assert len(a) == len(b) == half and not a & b
    if len(free) == 2 * half:
        assert a | b == set(free.tolist())
