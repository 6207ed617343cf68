"""PaFu-KV for a Wan generator on tiny random parts: the bidirectional Wan teacher's SSE labels, the head's
training through `python -m backend.train salience --model wan:DIR`, and generating with the head it wrote."""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from wan_tiny import save_folder, tiny_wan  # noqa: E402

from backend.salience import combine_sse, sse_components, teacher_sse  # noqa: E402

PROMPT = "a red cat walks on the beach"


@pytest.fixture(scope="module")
def wan():
    return tiny_wan(max_length=64)


def test_the_wan_teacher_is_bidirectional_and_its_labels_are_the_sse_of_its_attention(wan):
    """Every layer's labels equal the SSE components of the probabilities formed from the queries and keys the
    teacher pass reports, and keys get attention from earlier chunks' queries (s_up > 0), which a chunk-causal
    model could never give them."""
    model, _ = wan
    geo = model.geometry
    torch.manual_seed(0)
    lat = torch.randn(6, *geo.latent_shape)
    cond = model.condition(PROMPT)[0]
    labels = teacher_sse(model, cond, lat, seed=4)
    seen = []
    g = torch.Generator().manual_seed(4)
    x = 0.5 * lat + 0.5 * torch.randn(lat.shape, generator=g)
    model.teacher_attention(cond, x, 0.5, lambda q, k, n: seen.append((q, k, n)))
    block = torch.arange(6).div(3, rounding_mode="floor").repeat_interleave(geo.tokens_per_frame)
    assert len(labels) == len(seen) == geo.n_layer
    for lab, (q, k, n) in zip(labels, seen):
        assert n == 0 and q.shape == (geo.n_head, 6 * geo.tokens_per_frame, geo.head_dim)
        p = (q @ k.transpose(1, 2) / geo.head_dim**0.5).softmax(-1)
        comp = sse_components(p, block)
        assert torch.allclose(lab, combine_sse(comp), atol=1e-5)
        assert (comp[2, block == 0] == 0).all() and (comp[2, block == 1] > 0).all()  # s_up: only bidirectional


def test_the_head_trains_through_the_salience_command_and_pafu_generates_with_it(wan, tmp_path, capsys):
    from backend.__main__ import main as cli
    from backend.loading import load_head
    from backend.train.__main__ import main as train

    model, dec = wan
    folder = save_folder(tmp_path / "wan", model, dec)
    heads = tmp_path / "heads"
    args = ["generate", "--model", f"wan:{folder}", "--size", "64x64", "--prompt", PROMPT, "--frames", "9"]
    pafu = ["--policy", "pafu", "--budget", "5f", "--quiet"]
    assert cli([*args, *pafu, "--out", str(tmp_path / "none.mp4")]) == 2  # no head distilled for this model yet
    assert "no salience head" in capsys.readouterr().err
    assert cli([*args, *pafu, "--models-dir", str(tmp_path / "assets_like"), "--out", str(tmp_path / "x.mp4")]) == 2
    train(
        ["salience", "--model", f"wan:{folder}", "--size", "64x64", "--steps", "20"]
        + ["--runs-dir", str(tmp_path / "runs"), "--models-dir", str(heads)]
    )
    head = load_head(heads / "salience_head.safetensors")
    head.check(model.geometry)
    q = json.loads((tmp_path / "runs" / "salience_wan" / "quality.json").read_text())
    assert len(q["heldout"]["spearman_per_layer"]) == model.geometry.n_layer and q["model"] == f"wan:{folder}"
    out = tmp_path / "pafu.mp4"
    assert cli([*args, *pafu, "--models-dir", str(heads), "--out", str(out)]) == 0
    assert out.stat().st_size > 0
    # the world's shipped head is refused on this model, by name of what differs
    from backend.build import build_policy

    with pytest.raises(ValueError, match="distilled for 4 layers"):
        build_policy("pafu", "5f", 9, model)
    with pytest.raises(SystemExit):
        train(["teacher", "--model", f"wan:{folder}"])  # only the salience stage takes a Wan generator
    assert np.isfinite(q["train"]["spearman_per_layer"]).all()


def test_the_teacher_is_the_folders_transformer_shared_when_no_generator_replaces_it(wan, tmp_path):
    from safetensors.torch import save_file
    from wan_tiny import tiny_transformer

    from backend.models.wan_loading import load_wan, load_wan_teacher

    model, dec = wan
    folder = save_folder(tmp_path / "wan", model, dec)
    student, _ = load_wan(folder, frame_size=(64, 64))
    assert load_wan_teacher(folder, student).tr is student.tr  # the same weights: not loaded twice
    gen = tmp_path / "g.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_transformer(seed=5).state_dict().items()}, str(gen))
    distilled, _ = load_wan(folder, gen, frame_size=(64, 64))
    teacher = load_wan_teacher(folder, distilled, gen)
    base = dict(model.tr.named_parameters())
    assert all(torch.equal(p, base[k]) for k, p in teacher.tr.named_parameters())  # the folder's Wan2.1
    assert not torch.equal(distilled.tr.proj_out.weight, teacher.tr.proj_out.weight)
