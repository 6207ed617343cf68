import pytest
import torch

from backend.cache import DTYPES, KVCache, LayerCache
from backend.quant import pack_layer, quant_error_bound, quantize


def filled(n=40, H=2, Dh=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    layer = LayerCache.empty(H, Dh)
    for f in range(n // 10):
        k, v = torch.randn(H, 10, Dh, generator=g), torch.randn(H, 10, Dh, generator=g)
        ids = torch.arange(f * 10, f * 10 + 10)
        layer.append(
            k,
            v,
            {
                "frame": torch.full((10,), f),
                "token_id": ids,
                "pos": torch.stack([ids // 10 + 1, ids % 3, ids % 5], 1),
                "birth": ids,
            },
        )
    return layer


def check_aligned(layer):
    n = len(layer)
    assert layer.k.shape[1] == layer.v.shape[1] == n
    for key, val in layer.meta.items():
        assert val.shape[0] == n, key


def test_metadata_stays_aligned_through_append_keep_clone():
    layer = filled()
    check_aligned(layer)
    k_before = layer.k.clone()
    ids_before = layer.meta["token_id"].clone()
    keep = torch.tensor([0, 3, 17, 25, 39])
    evicted, source = layer.keep_map(keep)
    check_aligned(layer)
    # order-free: the kept set is exact, its order is `source` (tail tokens fill the evicted slots)
    assert sorted(layer.meta["token_id"].tolist()) == ids_before[keep].tolist()
    assert sorted(source.tolist()) == keep.tolist()
    assert layer.meta["token_id"].tolist() == ids_before[source].tolist()
    assert torch.equal(layer.k, k_before[:, source])
    assert sorted(evicted.tolist() + layer.meta["token_id"].tolist()) == list(range(40))
    # each token's metadata moved with its K/V
    assert torch.equal(layer.meta["birth"], layer.meta["token_id"])
    c = layer.clone()
    c.keep(torch.tensor([1]))
    assert len(layer) == 5 and len(c) == 1
    with pytest.raises(IndexError):
        layer.keep(torch.tensor([99]))


def test_rotated_key_memo_follows_new_positions():
    """set_positions and assign mark the changed tokens; settle re-rotates them only, all at once, with the
    rotation the memo was made with; the memo then equals rotating every key afresh, also across a keep that
    moves a waiting token. Quantising keys drops it."""
    layer = filled(20)
    calls = []

    def rot(k, pos):
        calls.append(k.shape[1])
        return k * pos[:, 0, None].float() + pos[:, 1, None].float()

    a = layer.rotated_keys(rot).clone()
    layer.rotated_keys(rot)
    assert calls == [20]
    pos = layer.meta["pos"].clone()
    pos[3:7, 0] += 5  # four tokens move in time
    layer.set_positions(pos)
    layer.assign(torch.arange(5, 10), layer.k[:, 5:10] * 2, layer.v[:, 5:10])  # five re-written, two of them moved
    assert calls == [20]  # nothing rotated until settled
    layer.settle()
    assert calls == [20, 7]  # tokens 3..9, once
    b = layer.rotated_keys(lambda *x: pytest.fail("memo recomputed"))
    assert torch.equal(b, rot(layer.k, pos)) and not torch.equal(a, b)
    assert torch.equal(b[:, :3], a[:, :3]) and torch.equal(b[:, 10:], a[:, 10:])
    pos = layer.meta["pos"].clone()
    pos[18, 0] += 1
    layer.set_positions(pos)
    layer.keep(torch.tensor([i for i in range(20) if i != 2]))  # token 18 waits and moves into slot 2
    got = layer.rotated_keys(rot)
    assert calls[-1] == 1 and torch.equal(got, rot(layer.k, layer.meta["pos"]))
    layer.set_dtype(torch.arange(5), "int8")
    assert layer._krot is None and layer._inv is None


def test_settle_batches_layers_rotated_alike_and_keeps_other_rotations_apart():
    """One call per rotation function over every layer that waits; each layer's memo equals its own rotation."""
    from backend.cache import settle

    calls = []

    def rotation(scale):
        def rot(k, pos):
            calls.append((scale, k.shape[1]))
            return k * scale + pos[:, 0, None].float()

        return rot

    a, b = rotation(1.0), rotation(3.0)
    layers = [filled(10), filled(10), filled(10)]
    for layer, rot in zip(layers, (a, a, b)):
        layer.rotated_keys(rot)
        pos = layer.meta["pos"].clone()
        pos[2:4, 0] += 7
        layer.set_positions(pos)
    calls.clear()
    settle(layers)
    assert sorted(calls) == [(1.0, 4), (3.0, 2)]  # the two layers rotated by `a` in one call
    for layer, rot in zip(layers, (a, a, b)):
        assert layer._stale is None and torch.equal(layer._krot, rot(layer.k, layer.meta["pos"]))


def test_inverse_key_norm_memo_follows_append_and_keep():
    layer = filled(30)
    fresh = lambda: 1 / layer.k.permute(1, 0, 2).reshape(len(layer), -1).norm(dim=1)  # noqa: E731
    assert torch.allclose(layer.inverse_key_norms(), fresh())
    layer.keep(torch.tensor([0, 4, 11, 12, 29]))
    assert layer._inv is not None and torch.allclose(layer.inverse_key_norms(), fresh())
    layer.append(torch.randn(2, 3, 8), torch.randn(2, 3, 8), {"token_id": torch.arange(100, 103)})
    assert len(layer._inv) == 8 and torch.allclose(layer.inverse_key_norms(), fresh())


def test_rotated_key_memo_follows_append_and_keep():
    """The memo is carried through keep (re-indexed) and append (extended with the rotated new keys, as
    attention computed them), and always equals rotating the held keys afresh."""

    def rot(k, pos):
        return k * pos[:, 0, None].float() + pos[:, 1, None].float()

    layer = filled(30)
    layer.rotated_keys(rot)
    layer.keep(torch.tensor([0, 4, 11, 12, 29]))
    assert layer._krot is not None and torch.equal(layer._krot, rot(layer.k, layer.meta["pos"]))
    k, v = torch.randn(2, 3, 8), torch.randn(2, 3, 8)
    pos = torch.tensor([[9, 1, 2], [9, 2, 0], [9, 0, 1]])
    layer.append(k, v, {"pos": pos, "token_id": torch.arange(100, 103)}, k_rot=rot(k, pos))
    assert torch.equal(layer.rotated_keys(lambda *a: pytest.fail("memo recomputed")), rot(layer.k, layer.meta["pos"]))
    layer.append(k, v, {"pos": pos, "token_id": torch.arange(200, 203)})  # no rotated keys: memo dropped
    assert layer._krot is None


@pytest.mark.parametrize("name", list(DTYPES))
def test_byte_accounting_matches_packed_buffers_token_scheme(name):
    layer = filled(30, H=3, Dh=10)
    layer.set_dtype(torch.arange(0, 30, 2), name, "token")  # mixed: half at `name`, half fp32
    packed = sum(b.numel() * b.element_size() for b in pack_layer(layer))
    assert layer.nbytes() == packed
    H, Dh = 3, 10
    bits = DTYPES[name][1]
    per_token = 2 * ((H * Dh * bits + 7) // 8 + (4 if bits < 16 else 0))
    assert layer.nbytes() == 15 * per_token + 15 * 2 * H * Dh * 4


@pytest.mark.parametrize("name", ["int8", "int4", "int2"])
def test_byte_accounting_channel_groups(name):
    """`channel` scheme: per-head value scales per token, per-channel key scales once per group, and a group's
    scales go only when its last token does; the packed buffers have exactly the counted size."""
    H, Dh = 3, 10
    bits = DTYPES[name][1]
    codes = 2 * ((H * Dh * bits + 7) // 8)
    layer = filled(30, H=H, Dh=Dh)
    layer.set_dtype(torch.arange(0, 10), name)  # group 0: frame 0
    layer.set_dtype(torch.arange(10, 20), name, "channel")  # group 1: frame 1
    assert layer.meta["qgroup"].tolist() == [0] * 10 + [1] * 10 + [-1] * 10
    fp32 = 2 * H * Dh * 4
    expect = lambda n_q, groups: n_q * (codes + H * 4) + groups * H * Dh * 4  # noqa: E731
    assert layer.nbytes() == expect(20, 2) + 10 * fp32
    assert layer.nbytes() == sum(b.numel() * b.element_size() for b in pack_layer(layer))
    layer.keep(torch.tensor([3] + list(range(20, 30))))  # group 1 gone, group 0 keeps one token
    assert layer.nbytes() == expect(1, 1) + 10 * fp32
    assert layer.nbytes() == sum(b.numel() * b.element_size() for b in pack_layer(layer))
    assert layer.clone().next_group == 2


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_quantized_roundtrip_error_within_bound(bits):
    from backend.quant import quantize_channels

    x = torch.randn(4, 50, 16) * 3
    x[:, :, 3] *= 20  # an outlier channel, as keys have
    for q, dim in ((quantize(x, bits), (0, 2)), (quantize(x, bits, per_head=True), 2), (quantize_channels(x, bits), 1)):
        assert ((q - x).abs() <= quant_error_bound(x, bits, dim)).all()
        assert not torch.equal(q, x)
    err = lambda q: float(((q - x) ** 2).mean())  # noqa: E731
    assert err(quantize_channels(x, bits)) < err(quantize(x, bits))  # the outlier channel no longer sets every step


def test_hadamard_scheme_costs_channel_bytes_and_spreads_outliers():
    """`hadamard`: the same bytes as `channel` (a fixed orthonormal rotation needs no storage); on values
    whose head vectors each carry one large coordinate it rounds with less error than `channel`, whose
    per-token range that coordinate sets; a head dim that is no power of two is refused clearly."""
    from backend.quant import hadamard

    h = hadamard(16)
    assert torch.allclose(h @ h.T, torch.eye(16), atol=1e-6) and set(h.abs().unique().tolist()) == {0.25}
    with pytest.raises(ValueError, match="power-of-two"):
        hadamard(12)
    H, Dh = 2, 16
    g = torch.Generator().manual_seed(7)
    errs, nbytes = {}, {}
    for scheme in ("channel", "hadamard"):
        layer = filled(20, H=H, Dh=Dh)
        layer.v[:, :10, 5] += 40 * torch.rand(H, 10, generator=g)  # one outlier dim in each head vector
        ref_k, ref_v = layer.k.clone(), layer.v.clone()
        layer.set_dtype(torch.arange(10), "int4", scheme)
        assert layer.meta["qgroup"][:10].tolist() == [0] * 10
        assert torch.equal(layer.k[:, 10:], ref_k[:, 10:]) and torch.equal(layer.v[:, 10:], ref_v[:, 10:])
        errs[scheme] = float(((layer.v - ref_v) ** 2).mean())
        nbytes[scheme] = layer.nbytes()
        g = torch.Generator().manual_seed(7)
    assert nbytes["hadamard"] == nbytes["channel"]
    assert errs["hadamard"] < 0.5 * errs["channel"], errs
    with pytest.raises(ValueError, match="power-of-two"):
        filled(10, H=2, Dh=12).set_dtype(torch.arange(3), "int4", "hadamard")


def test_bad_quant_scheme_rejected():
    with pytest.raises(ValueError, match="scheme"):
        filled(10).set_dtype(torch.arange(3), "int4", "blockwise")


def test_kvcache_occupancy_bytes_clone():
    c = KVCache(3, 2, 8)
    for layer in c.layers:
        layer.append(torch.randn(2, 5, 8), torch.randn(2, 5, 8), {"token_id": torch.arange(5)})
    assert c.occupancy() == [5, 5, 5]
    assert c.nbytes() == [5 * 2 * 2 * 8 * 4] * 3
    d = c.clone()
    d.layers[0].keep(torch.tensor([0]))
    assert c.occupancy() == [5, 5, 5] and d.occupancy() == [1, 5, 5]


def test_merge_weights_values_by_count_and_leaves_others_untouched():
    layer = filled(30)
    layer.meta["count"][5] = 2.0  # token 5 already stands for two keys
    v, ids = layer.v.clone(), layer.meta["token_id"].clone()
    gone = layer.merge(torch.tensor([0, 1, 2]), torch.tensor([5, 5, 7]))
    assert sorted(gone.tolist()) == [0, 1, 2]
    check_aligned(layer)
    at = {int(t): i for i, t in enumerate(layer.meta["token_id"])}
    assert torch.allclose(layer.v[:, at[5]], (2 * v[:, 5] + v[:, 0] + v[:, 1]) / 4, atol=1e-6)
    assert torch.allclose(layer.v[:, at[7]], (v[:, 7] + v[:, 2]) / 2, atol=1e-6)
    assert layer.meta["count"][at[5]] == 4 and layer.meta["count"][at[7]] == 2
    others = [i for i in range(3, 30) if i not in (5, 7)]
    assert torch.equal(layer.v[:, [at[int(ids[i])] for i in others]], v[:, others])  # bit-identical
    half = filled(30)  # merge_values alone: the merged-away stay, marked count 0
    mask = half.merge_values(torch.tensor([0, 1]), torch.tensor([5, 5]))
    assert len(half) == 30 and torch.equal(mask.nonzero().flatten(), torch.tensor([0, 1]))
    assert torch.equal((half.meta["count"] == 0).nonzero().flatten(), torch.tensor([0, 1]))
