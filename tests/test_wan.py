"""The Wan2.1-based generator (backend/models/wan.py) on tiny random parts built here (tests/wan_tiny.py)."""

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from budgets import within  # noqa: E402
from wan_tiny import save_folder, tiny_transformer, tiny_wan  # noqa: E402

from backend.cache import KVCache  # noqa: E402
from backend.config import SamplerConfig  # noqa: E402
from backend.models.wan import block_causal_mask  # noqa: E402
from backend.models.wan_parts import WAN_SAMPLER  # noqa: E402
from backend.policies import POLICIES, make_policy  # noqa: E402
from backend.stepper import Stepper  # noqa: E402

PROMPT = "a red cat walks on the beach"


@pytest.fixture(scope="module")
def wan():
    return tiny_wan()


def test_the_first_chunk_equals_the_plain_diffusers_forward(wan):
    model, _ = wan
    torch.manual_seed(1)
    text = model.condition(PROMPT)[0]
    cache = KVCache(model.geometry.n_layer, model.geometry.n_head, model.geometry.head_dim)
    model.prefill(text, cache)
    x, t = torch.randn(3, 4, 8, 8), torch.full((3,), 0.7)
    v = model.forward_chunk(x, t, 0, cache)
    ref = model.tr(x.permute(1, 0, 2, 3)[None], timestep=t[:1] * 1000, encoder_hidden_states=text[None]).sample
    assert (v - ref[0].permute(1, 0, 2, 3)).abs().max() <= 1e-4


def test_cached_chunks_equal_a_block_causal_full_recompute(wan):
    """Chunk by chunk against the cache (committed clean, then a noisy chunk at every level the sampler visits)
    equals one pass of the same blocks over every frame under a block-causal mask."""
    model, _ = wan
    geo = model.geometry
    torch.manual_seed(2)
    cache = KVCache(geo.n_layer, geo.n_head, geo.head_dim)
    model.prefill(model.condition(PROMPT)[0], cache)
    clean = torch.randn(9, 4, 8, 8)
    for c in range(3):
        model.forward_chunk(clean[3 * c : 3 * c + 3], torch.zeros(3), 3 * c, cache, commit=True)
    mask = block_causal_mask(12, 3, geo.tokens_per_frame)
    for level in (1.0, 0.94, 0.62):
        noisy, tn = torch.randn(3, 4, 8, 8), torch.full((3,), level)
        cached = model.forward_chunk(noisy, tn, 9, cache)
        full = model.forward_seq(torch.cat([clean, noisy]), torch.cat([torch.zeros(9), tn]), cache.condition, mask)
        assert (cached - full[9:]).abs().max() <= 1e-4


def test_the_video_streams_chunk_by_chunk_as_the_vae_decodes_it_whole(wan):
    """Committed chunks decode with the VAE's causal cache carried over (previews leave it untouched): the
    streamed video equals diffusers' one-shot decode of all latents, 1 + 4 (n - 1) pixel frames."""
    model, dec = wan
    st = Stepper(model, dec, PROMPT, 9, seed=1, sampler=SamplerConfig(**WAN_SAMPLER), preview=True)
    list(st.run())
    z = st.latents.permute(1, 0, 2, 3)[None] * dec.std + dec.mean
    ref = dec.vae.decode(z).sample.clamp(-1, 1)[0]
    ref = ((ref.permute(1, 2, 3, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    assert st.video.shape == (33, 64, 64, 3) and np.array_equal(st.video, ref)
    assert np.array_equal(st.frames[1:], st.video[4::4]) and np.array_equal(st.frames[0], st.video[0])


@pytest.mark.parametrize("name", [n for n in POLICIES if n != "full"])
def test_every_policy_runs_four_chunks_on_wan_within_its_budget(wan, name):
    from backend.build import reference_scores

    model, dec = wan
    geo = model.geometry
    sampler = SamplerConfig(**WAN_SAMPLER)
    kw = {}
    if name == "pafu":
        from backend.salience import SalienceHead, SEHConfig

        torch.manual_seed(0)
        cfg = SEHConfig(n_layer=geo.n_layer, key_dim=geo.n_head * geo.head_dim, grid=geo.grid[0], cols=geo.grid[1])
        kw["head"] = SalienceHead(cfg)
    if name == "oracle":
        kw["reference"] = reference_scores(model, dec, PROMPT, 12, 3, sampler)
    need = make_policy(name, **kw).min_budget(geo.n_prompt, geo.tokens_per_frame, geo.chunk_frames)
    budget = max(need, 6 * geo.tokens_per_frame)
    pol = make_policy(name, budget=budget, **kw)
    st = Stepper(model, dec, PROMPT, 12, seed=3, policy=pol, sampler=sampler, preview=False)
    evicts = [r for r in st.run() if r.phase == "evict"]
    assert len(evicts) == 4
    for r in evicts:
        assert within(r, budget), (r.occupancy, r.heads)
        for kept, layer in zip(r.kept, st.cache.layers if r is evicts[-1] else [None] * len(r.kept)):
            assert len(np.unique(kept)) == len(kept)
            if layer is not None:
                assert np.array_equal(np.sort(kept), np.sort(layer.meta["token_id"].numpy()))


# diffusers name -> original Wan name, written out independently of the converter's table
_ORIGINAL = [
    ("attn1.to_q.", "self_attn.q."),
    ("attn1.to_k.", "self_attn.k."),
    ("attn1.to_v.", "self_attn.v."),
    ("attn1.to_out.0.", "self_attn.o."),
    ("attn1.norm_q.", "self_attn.norm_q."),
    ("attn1.norm_k.", "self_attn.norm_k."),
    ("attn2.to_q.", "cross_attn.q."),
    ("attn2.to_k.", "cross_attn.k."),
    ("attn2.to_v.", "cross_attn.v."),
    ("attn2.to_out.0.", "cross_attn.o."),
    ("attn2.norm_q.", "cross_attn.norm_q."),
    ("attn2.norm_k.", "cross_attn.norm_k."),
    ("norm2.", "norm3."),
    ("ffn.net.0.proj.", "ffn.0."),
    ("ffn.net.2.", "ffn.2."),
    ("scale_shift_table", "modulation"),
    ("condition_embedder.text_embedder.linear_1.", "text_embedding.0."),
    ("condition_embedder.text_embedder.linear_2.", "text_embedding.2."),
    ("condition_embedder.time_embedder.linear_1.", "time_embedding.0."),
    ("condition_embedder.time_embedder.linear_2.", "time_embedding.2."),
    ("condition_embedder.time_proj.", "time_projection.1."),
    ("proj_out.", "head.head."),
    ("patch_embedding.", "patch_embedding."),
]


def _original_name(key: str) -> str:
    if key == "scale_shift_table":
        return "head.modulation"
    for new, old in _ORIGINAL:
        if new in key:
            return key.replace(new, old)
    raise AssertionError(key)


def test_an_original_layout_generator_converts_and_loads_to_identical_parameters(tmp_path):
    from safetensors.torch import load_file

    from backend.models.wan_loading import convert, load_generator_into, read_generator

    model = tiny_transformer(seed=5)
    torch.manual_seed(9)
    original = {"model." + _original_name(k): torch.randn_like(v) for k, v in model.state_dict().items()}
    ckpt = tmp_path / "self_forcing.pt"
    torch.save({"generator": {k: v * 0 for k, v in original.items()}, "generator_ema": original}, ckpt)
    load_generator_into(model, read_generator(ckpt))  # the EMA generator is preferred
    for k, v in model.state_dict().items():
        assert torch.equal(v, original["model." + _original_name(k)]), k
    n = convert(ckpt, tmp_path / "gen.safetensors")
    again = load_file(str(tmp_path / "gen.safetensors"))
    assert n == len(again) and all(torch.equal(again[k], v) for k, v in model.state_dict().items())
    fresh = tiny_transformer(seed=6)
    load_generator_into(fresh, read_generator(tmp_path / "gen.safetensors"))  # the diffusers layout as is
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in model.state_dict().items())


def test_bad_generator_checkpoints_are_refused_with_a_message(tmp_path):
    from backend.models.wan_loading import CheckpointError, load_generator_into, read_generator

    model = tiny_transformer()
    good = dict(model.state_dict())
    torch.save({**good, "blocks.0.extra.weight": torch.zeros(1)}, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match="unexpected"):
        load_generator_into(model, read_generator(tmp_path / "extra.pt"))
    torch.save({**good, "proj_out.weight": torch.zeros(3, 3)}, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_generator_into(model, read_generator(tmp_path / "shape.pt"))
    torch.save({k: v for k, v in good.items() if k != "proj_out.bias"}, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="missing proj_out.bias"):
        load_generator_into(model, read_generator(tmp_path / "missing.pt"))

    class Payload:  # an object whose unpickling would run code: weights_only refuses it, nothing executes
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"generator": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="not a weights-only checkpoint"):
        read_generator(tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="no generator checkpoint"):
        read_generator(tmp_path / "nope.pt")


def test_a_model_folder_loads_locally_and_a_missing_part_is_named(wan, tmp_path):
    from backend.models.wan_loading import CheckpointError, load_wan

    model, dec = wan
    save_folder(tmp_path, model, dec)
    loaded, ldec = load_wan(tmp_path, frame_size=(64, 64), max_length=8)
    assert loaded.geometry == model.geometry
    assert torch.equal(loaded.condition(PROMPT)[0], model.condition(PROMPT)[0])
    a = Stepper(model, dec, PROMPT, 3, seed=2, sampler=SamplerConfig(**WAN_SAMPLER), preview=False)
    b = Stepper(loaded, ldec, PROMPT, 3, seed=2, sampler=SamplerConfig(**WAN_SAMPLER), preview=False)
    list(a.run()), list(b.run())
    assert np.array_equal(a.video, b.video)
    import shutil

    shutil.rmtree(tmp_path / "vae")
    with pytest.raises(CheckpointError, match="missing vae/"):
        load_wan(tmp_path)


def test_the_cli_generates_with_a_wan_folder_and_converts_checkpoints(wan, tmp_path):
    import imageio.v3 as iio

    from backend.__main__ import main

    model, dec = wan
    folder = save_folder(tmp_path / "wan", model, dec)
    out = tmp_path / "wan.mp4"
    args = ["generate", "--model", f"wan:{folder}", "--size", "64x64", "--prompt", PROMPT, "--frames", "6"]
    assert main([*args, "--policy", "window", "--policy-arg", "frames=3", "--out", str(out), "--scale", "1"]) == 0
    assert iio.imread(out).shape[0] == 1 + 4 * 5  # every pixel frame of 6 latent frames
    assert main([*args, "--device", "cuda", "--out", str(out)]) == 2 or __import__("torch").cuda.is_available()
    torch.save({"generator_ema": dict(model.tr.state_dict())}, tmp_path / "g.pt")
    assert main(["convert", str(tmp_path / "g.pt"), "--out", str(tmp_path / "g.safetensors")]) == 0
    assert (
        main(
            [
                "generate",
                "--model",
                f"wan:{folder}",
                "--generator",
                str(tmp_path / "g.safetensors"),
                "--size",
                "64x64",
                "--prompt",
                PROMPT,
                "--frames",
                "3",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    assert main(["generate", "--model", f"wan:{tmp_path / 'none'}", "--prompt", PROMPT, "--out", str(out)]) == 2


def test_the_speed_benchmark_runs_every_policy_on_a_tiny_shape(tmp_path):
    """`python -m backend.bench.wan_speed` (the GPU script's bench) on the tiny shape: one result line per run,
    every bounded run within its budget's memory."""
    import json

    from backend.bench.wan_speed import RUNS, run

    rows = run("tiny", 48, tmp_path, minutes=5)
    lines = (tmp_path / "wan_speed.jsonl").read_text().splitlines()
    assert len(rows) == len(lines) == len(RUNS) and all(len(r["chunk_ms"]) == 16 for r in rows)
    full = next(json.loads(x) for x in lines if json.loads(x)["policy"] == "full")
    assert all(r["peak_kv_bytes"] < full["peak_kv_bytes"] for r in rows if r["share"] is not None)
    h2o = next(r for r in rows if r["policy"] == "h2o")  # reads attention probabilities: its statistics cost
    assert len(h2o["stats_ms"]) == 16 and sum(h2o["stats_ms"]) > 0 and sum(full["stats_ms"]) == 0
    from backend.bench.wan_speed import report

    table = report(tmp_path / "wan_speed.jsonl", tmp_path / "report")
    assert table.count("\n") == len(RUNS) + 1 and (tmp_path / "report" / "latency.png").stat().st_size > 0
