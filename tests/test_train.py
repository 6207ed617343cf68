"""Training plumbing: every stage runs, writes safetensors and resumes from its state (tiny sizes)."""

from safetensors import safe_open

from backend import checkpoint
from backend.train.__main__ import main


def test_stages_run_export_and_resume(tmp_path):
    runs, models = tmp_path / "runs", tmp_path / "models"
    common = ["--recipe", "quick", "--runs-dir", str(runs), "--models-dir", str(models)]
    main(["ae", "--steps", "2", *common])
    main(["teacher", "--steps", "2", "--preset", "tiny", *common])
    main(["student", "--steps", "2", "--preset", "tiny", *common])
    for name in ("autoencoder", "teacher", "student"):
        _, cfg, extra = checkpoint.read(models / f"{name}.safetensors")
        assert cfg
    with safe_open(str(runs / "student" / "state.safetensors"), "pt") as f:
        assert f.metadata()["step"] == "2"
    main(["student", "--steps", "3", "--preset", "tiny", *common])  # resumes at 2, runs one more
    with safe_open(str(runs / "student" / "state.safetensors"), "pt") as f:
        assert f.metadata()["step"] == "3"
    assert (runs / "student" / "log.jsonl").read_text().count("next_frame_mse") == 2
    # the shipped teacher's recipe: continued from the student's weights (`--init`) in a fresh run folder
    main(
        [
            "teacher",
            "--recipe",
            "long",
            "--steps",
            "2",
            "--preset",
            "tiny",
            "--init",
            str(models / "student.safetensors"),
            "--runs-dir",
            str(tmp_path / "runs_long"),
            "--models-dir",
            str(models),
        ]
    )
    _, _, extra = checkpoint.read(models / "teacher.safetensors")
    assert extra["recipe"] == "long" and extra["steps"] == 2
    main(["salience", "--steps", "3", *common])
    _, _, extra = checkpoint.read(models / "salience_head.safetensors")
    assert len(extra["heldout"]["spearman_per_layer"]) == 2 and extra["labels"] == "sse"
    main(["salience", "--steps", "2", "--labels", "hindsight", *common])
    _, _, extra = checkpoint.read(models / "salience_head_hindsight.safetensors")
    assert extra["labels"] == "hindsight" and len(extra["heldout"]["recall_top25_per_layer"]) == 2
    enc_before = checkpoint.read(models / "autoencoder.safetensors")[0]
    main(["decoder", "--steps", "2", "--recipe", "sharp", "--runs-dir", str(runs), "--models-dir", str(models)])
    enc_after = checkpoint.read(models / "autoencoder.safetensors")[0]
    changed = {k for k in enc_before if not (enc_before[k] == enc_after[k]).all()}
    assert changed and all(k.startswith("decoder.") for k in changed)  # the latent space is untouched


def test_rollout_context_is_causal_and_anchored():
    """Scheduled sampling: the generated context keeps the anchor frames, and frame k of it depends only on
    ground-truth frames < k (it is a rollout), so changing the last frame changes nothing before it."""
    import dataclasses

    import numpy as np
    import torch

    from backend.loading import random_model
    from backend.train.video import RECIPES, rollout_context, student_loss

    model = random_model("tiny")
    cfg = dataclasses.replace(RECIPES["student"]["quick"], p_rollout=1.0, rollout_rounds=2, rollout_anchor=1)
    g = model.cfg.grid
    x0 = torch.randn(2, 5, model.cfg.latent_ch, g, g)
    tokens = torch.randint(1, 10, (2, model.cfg.n_prompt))
    torch.manual_seed(0)
    ctx = rollout_context(model, tokens, x0, cfg)
    assert ctx.shape == x0.shape and torch.equal(ctx[:, :1], x0[:, :1])
    assert (ctx[:, 1:] - x0[:, 1:]).abs().amax() > 1e-3  # the rest is the model's own output
    x1 = x0.clone()
    x1[:, -1] += 1.0
    torch.manual_seed(0)
    assert torch.allclose(rollout_context(model, tokens, x1, cfg), ctx, atol=1e-5)  # causal
    x2 = x0.clone()
    x2[:, 0] += 1.0
    torch.manual_seed(0)
    assert (rollout_context(model, tokens, x2, cfg)[:, 1:] - ctx[:, 1:]).abs().amax() > 1e-4  # the anchor drives it
    model.train()
    loss = student_loss(model, tokens, x0, cfg, np.random.default_rng(0))
    loss.backward()
    assert torch.isfinite(loss) and model.training
    assert all(p.grad is not None for p in model.blocks[0].parameters())


def test_teacher_loss_weights_sprite_tokens():
    """`sprite_weight` (the `long` recipe) re-weights the teacher's loss towards tokens a sprite touches: a
    uniform mask leaves the loss as it was, a partial one moves it, and the weights are normalised."""
    import dataclasses

    import numpy as np
    import torch

    from backend.train.video import RECIPES, teacher_loss

    class Zero:  # predicts v = 0, so the loss is the mean of (eps - x0)^2
        def bidirectional(self, tokens, xt, t, t_offset=0):
            return torch.zeros_like(xt)

    cfg = dataclasses.replace(RECIPES["teacher"]["long"], p_clean_prefix=0.0, p_t_offset=0.0)
    assert cfg.sprite_weight > 1
    x0 = torch.randn(2, 3, 4, 2, 2)

    def loss(mask):
        torch.manual_seed(0)
        return float(teacher_loss(Zero(), None, x0, cfg, np.random.default_rng(0), mask))

    plain = loss(None)
    assert abs(loss(torch.zeros(2, 3, 2, 2)) - plain) < 1e-5 and abs(loss(torch.ones(2, 3, 2, 2)) - plain) < 1e-5
    part = torch.zeros(2, 3, 2, 2)
    part[:, :, 0, 0] = 1.0
    torch.manual_seed(0)
    torch.rand(2, 1)  # the noise level, drawn first
    eps = torch.randn_like(x0)
    err = (eps - x0) ** 2  # (B, T, C, g, g)
    w = 1.0 + (cfg.sprite_weight - 1.0) * part[:, :, None]
    assert abs(loss(part) - float((err * w).sum() / (w.sum() * x0.shape[2]))) < 1e-5


def test_time_boxed_run_stops_saves_and_streams_in_order(tmp_path):
    """`--minutes` stops a run before its step count and still writes the state and weights at the step it
    reached; with loader workers, the clip stream keeps the recipe's short/long alternation."""
    import itertools

    import torch

    from backend.train.video import RECIPES, ClipStream

    runs, models = tmp_path / "runs", tmp_path / "models"
    main(
        [
            "student",
            "--steps",
            "500",
            "--preset",
            "tiny",
            "--minutes",
            "0.0001",
            "--batch",
            "1",
            "--long-batch",
            "1",
            "--runs-dir",
            str(runs),
            "--models-dir",
            str(models),
        ]
    )
    with safe_open(str(runs / "student" / "state.safetensors"), "pt") as f:
        step = int(f.metadata()["step"])
    assert 1 <= step < 500
    assert checkpoint.read(models / "student.safetensors")[2]["steps"] == step
    cfg = RECIPES["student"]["gpu"]
    loader = torch.utils.data.DataLoader(ClipStream(cfg, 8, start=0), batch_size=None, num_workers=2)
    lengths = [frames.shape[1] for frames, _, _ in itertools.islice(loader, 6)]
    assert lengths == [cfg.frames, cfg.long_frames] * 3


def test_a_resumed_time_boxed_run_goes_on_with_the_time_it_has_left(tmp_path):
    """The state records the training seconds spent, so a time-boxed run resumed after an interruption (a
    GPU machine taken back, a command's time limit) continues its cosine schedule: resumed with its time
    spent it trains no further (it used to start the time box, and the learning rate, over); given more
    minutes it goes on from the saved step."""
    from backend.train.common import trained_seconds

    runs, models = tmp_path / "runs", tmp_path / "models"
    args = [
        "student",
        "--steps",
        "500",
        "--preset",
        "tiny",
        "--batch",
        "1",
        "--long-batch",
        "1",
        "--runs-dir",
        str(runs),
        "--models-dir",
        str(models),
    ]
    state = runs / "student" / "state.safetensors"

    def step() -> int:
        with safe_open(str(state), "pt") as f:
            return int(f.metadata()["step"])

    main([*args, "--minutes", "0.0001"])
    first, spent = step(), trained_seconds(state)
    assert 1 <= first < 500 and spent >= 0.006
    main([*args, "--minutes", "0.0001"])
    assert step() == first and trained_seconds(state) == spent  # nothing trained, nothing rewritten
    main([*args, "--minutes", str((spent + 1.0) / 60)])  # one more second of training
    assert first < step() < 500 and trained_seconds(state) > spent


def test_windowed_context_draws_only_windows_that_fit():
    """`p_window` (the `gpuwin` recipe): a step trains on a sink + window context only when a window
    shorter than the clip fits; drawn windows and sinks stay within the recipe's bounds; p_window = 0 never
    windows. (That the windowed mask is what a window cache computes: test_exactness.)"""
    import numpy as np

    from backend.train.video import RECIPES, context_window

    cfg = RECIPES["student"]["gpuwin"]
    rng = np.random.default_rng(0)
    draws = [context_window(cfg, 32, rng) for _ in range(600)]
    windowed = [(w, s) for w, s in draws if w]
    assert 0.25 < len(windowed) / len(draws) < 0.41  # p_window = 0.33
    assert {w for w, _ in windowed} == set(range(cfg.window_min, cfg.window_max + 1))
    assert {s for _, s in windowed} == set(range(cfg.max_sink + 1))
    assert all(context_window(cfg, 8, rng)[0] in (0, 4, 5, 6) for _ in range(100))  # at most T - 2
    assert all(context_window(cfg, 5, rng) == (0, 0) for _ in range(50))  # no window fits
    assert all(context_window(RECIPES["student"]["gpu"], 32, rng) == (0, 0) for _ in range(50))


def test_first_chunk_loss_is_the_students_first_chunk(tmp_path):
    """`first_batch` (the `first` recipe) trains the first chunk alone through the bidirectional path: for one
    chunk that is exactly what the student's teacher-forcing layout computes for its first chunk (it sees
    only the prompt and itself), at chunk sizes 1 and 2; the recipe's stream carries the first chunks beside
    the clips, and a run with it trains and exports."""
    import dataclasses

    import numpy as np
    import torch

    from backend.loading import random_model
    from backend.train.video import RECIPES, ClipStream, first_chunk_loss

    for chunk in (1, 2):
        model = random_model("tiny")
        model.cfg = dataclasses.replace(model.cfg, chunk_frames=chunk)
        g, C = model.cfg.grid, model.cfg.latent_ch
        tokens = torch.randint(1, 10, (2, model.cfg.n_prompt))
        clean, noisy = torch.randn(2, 4, C, g, g), torch.randn(2, 4, C, g, g)
        t = torch.rand(2, 4)
        with torch.no_grad():
            ref = model.teacher_forcing(tokens, clean, torch.zeros(2, 4), noisy, t)[:, :chunk]
            alone = model.bidirectional(tokens, noisy[:, :chunk], t[:, :chunk])
        assert torch.allclose(alone, ref, atol=1e-5)
    model = random_model("tiny")
    x0 = torch.randn(3, 1, model.cfg.latent_ch, model.cfg.grid, model.cfg.grid)
    loss = first_chunk_loss(model, torch.randint(1, 10, (3, model.cfg.n_prompt)), x0, RECIPES["student"]["first"])
    loss.backward()
    assert torch.isfinite(loss) and model.out.weight.grad is not None
    cfg = dataclasses.replace(RECIPES["student"]["first"], batch=1, first_batch=3)
    frames, _, _, f_frames, f_tokens, f_mask = next(iter(ClipStream(cfg, 8, start=0)))
    assert frames.shape[1] == cfg.frames and f_frames.shape[:2] == (3, 1) and f_mask.shape == (3, 1, 8, 8)
    assert len(f_tokens) == 3 and not np.array_equal(f_frames[0].numpy(), f_frames[1].numpy())
    runs, models = tmp_path / "runs", tmp_path / "models"
    main(
        [
            "student",
            "--recipe",
            "first",
            "--steps",
            "2",
            "--preset",
            "tiny",
            "--batch",
            "1",
            "--runs-dir",
            str(runs),
            "--models-dir",
            str(models),
        ]
    )
    assert checkpoint.read(models / "student.safetensors")[2]["recipe"] == "first"
    # the GPU-sized drill is gpuwin plus first chunks, and its loader workers carry them too
    assert RECIPES["student"]["gpufirst"] == dataclasses.replace(RECIPES["student"]["gpuwin"], first_batch=192)
    main(
        [
            "student",
            "--recipe",
            "gpufirst",
            "--steps",
            "1",
            "--preset",
            "tiny",
            "--batch",
            "1",
            "--long-batch",
            "1",
            "--workers",
            "1",
            "--runs-dir",
            str(tmp_path / "gf"),
            "--models-dir",
            str(models),
        ]
    )
    assert checkpoint.read(models / "student.safetensors")[2]["recipe"] == "gpufirst"


def test_decoder_sprite_pixels_mark_sprites_and_their_edge_only():
    """The sharp decoder recipe's loss weights: a world frame's sprite pixels and their one-pixel rim, never
    the background away from them; the evaluator's own detector agrees on where the sprites are."""
    import numpy as np
    import torch

    from backend.autoencoder import frames_to_tensor
    from backend.consistency import colour_masks
    from backend.prompt import parse
    from backend.train.decoder import sprite_pixels
    from backend.world import make_clip

    frame = make_clip(parse("a red circle and a blue square on plain green"), 3, 1).frames[0]  # (S, S, 3) uint8
    w = sprite_pixels(frames_to_tensor(frame[None]))[0, 0].numpy()  # (S, S)
    sprites = np.any(list(colour_masks(frame).values()), axis=0)
    assert set(np.unique(w)) == {0.0, 1.0} and sprites.sum() > 50
    assert (w[sprites] == 1).all() and w.sum() > sprites.sum()  # the sprites and a rim
    rim = torch.nn.functional.max_pool2d(torch.tensor(sprites, dtype=torch.float)[None, None], 3, 1, 1)[0, 0].numpy()
    assert (w <= rim).all()  # nothing beyond one pixel


def test_amp_runs_the_student_in_bf16_and_keeps_fp32_weights(tmp_path, monkeypatch):
    """`--amp`: the student's losses run inside bfloat16 autocast (and only with the flag), their latent
    targets stay fp32, and the stored weights are fp32."""
    import torch

    from backend.train import video

    seen = []
    for name in ("student_loss", "first_chunk_loss"):
        orig = getattr(video, name)

        def spy(model, tokens, x0, *a, _orig=orig, _name=name, **k):
            seen.append((_name, torch.is_autocast_enabled("cpu"), x0.dtype))
            return _orig(model, tokens, x0, *a, **k)

        monkeypatch.setattr(video, name, spy)
    for amp in (False, True):
        seen.clear()
        runs, models = tmp_path / f"runs{amp}", tmp_path / f"models{amp}"
        main(
            [
                "student",
                "--recipe",
                "first",
                "--steps",
                "2",
                "--preset",
                "tiny",
                "--batch",
                "1",
                "--long-batch",
                "1",
                "--runs-dir",
                str(runs),
                "--models-dir",
                str(models),
                *(["--amp"] if amp else []),
            ]
        )
        assert sorted({n for n, _, _ in seen}) == ["first_chunk_loss", "student_loss"]
        assert all(on == amp and dtype == torch.float32 for _, on, dtype in seen), seen
        tensors, _, _ = checkpoint.read(models / "student.safetensors")
        assert all(t.dtype == torch.float32 for t in tensors.values())


def test_the_pixel_loss_reaches_the_model_through_a_frozen_decoder():
    """`pixel_weight` (the `bindpix` recipe): the first chunk's clean estimate is decoded and compared with the
    true frames, weighted on the sprite tokens' pixels; gradients reach the model, never the autoencoder, and the
    autoencoder's own latents of the frames score far better than noise."""
    import numpy as np
    import torch

    from backend.data import clip_batch
    from backend.loading import load_autoencoder, random_model
    from backend.train.losses import encode_clips, pixel_loss, token_weights
    from backend.train.video import RECIPES, first_chunk_loss

    cfg = RECIPES["student"]["bindpix"]
    assert cfg.pixel_weight > 0 and RECIPES["student"]["bind"].pixel_weight == 0
    ae = load_autoencoder().requires_grad_(False)
    frames, tokens, mask = (torch.from_numpy(a) for a in clip_batch(np.random.default_rng(0), 2, 1, mask_grid=8))
    x0 = encode_clips(ae, frames)
    w = token_weights(mask, cfg)
    assert pixel_loss(ae, x0, frames, w) < 0.25 * pixel_loss(ae, torch.randn_like(x0), frames, w)
    model = random_model("tiny")
    plain = first_chunk_loss(model, tokens, x0, RECIPES["student"]["bind"], mask)
    torch.manual_seed(0)
    with_pixels = first_chunk_loss(model, tokens, x0, cfg, mask, ae, frames)
    with_pixels.backward()
    assert model.out.weight.grad is not None and all(p.grad is None for p in ae.parameters())
    torch.manual_seed(0)
    assert with_pixels > first_chunk_loss(model, tokens, x0, RECIPES["student"]["bind"], mask) and plain > 0


def test_shape_pairs_differ_only_in_one_shape_and_the_contrast_scores_the_estimates_difference():
    """`bindcf`: rows i and P + i are the same scene with one object's shape swapped (one prompt token and the
    pixels near one sprite differ, the masks and layout agree); the contrast is 0 for the true latents, 1 for an
    estimate that ignores the shape, and the pairs share their noise level and noise."""
    import dataclasses

    import numpy as np
    import torch

    from backend.data import shape_pairs, swap_shape
    from backend.loading import random_model
    from backend.prompt import parse
    from backend.train.losses import shape_contrast
    from backend.train.video import RECIPES, first_chunk_loss

    spec = parse("a red circle and a red square on blue stripes")
    for seed in range(6):  # a swap never makes two objects equal
        new = swap_shape(spec, np.random.default_rng(seed))
        assert len(set(new.objects)) == 2 and sum(a != b for a, b in zip(new.objects, spec.objects)) == 1
    frames, tokens, masks = shape_pairs(np.random.default_rng(0), 4, 1, 8)
    assert frames.shape[0] == tokens.shape[0] == masks.shape[0] == 8
    assert ((tokens[:4] != tokens[4:]).sum(1) == 1).all()
    changed = (frames[:4] != frames[4:]).any(-1).mean((1, 2, 3))  # share of pixels that differ, per pair
    assert (changed > 0).all() and (changed < 0.05).all()
    x0 = torch.randn(8, 1, 8, 8, 8)
    assert shape_contrast(x0, x0) == 0
    blind = torch.cat([x0[:4], x0[:4]])  # the counterfactual estimate equals the original's
    assert torch.isclose(shape_contrast(blind, x0), torch.tensor(1.0))
    model, cfg = random_model("tiny"), RECIPES["student"]["bindcf"]
    assert cfg.shape_contrast > 0 and cfg.first_batch == RECIPES["student"]["bind"].first_batch
    seen = []
    model.bidirectional = lambda tok, xt, t: seen.append((xt, t)) or torch.zeros_like(xt)
    tok = torch.from_numpy(tokens)
    same = torch.cat([x0[:4], x0[:4]])  # identical pairs: identical noised inputs
    first_chunk_loss(model, tok, same, cfg)
    xt, t = seen[-1]
    assert torch.equal(xt[:4], xt[4:]) and torch.equal(t[:4], t[4:])
    first_chunk_loss(model, tok, same, dataclasses.replace(cfg, shape_contrast=0.0))
    assert not torch.equal(seen[-1][0][:4], seen[-1][0][4:])
    # bindcfx: the swapped prompt on the originals' own noisy inputs (from its level up)
    shared = dataclasses.replace(RECIPES["student"]["bindcfx"], contrast_min_t=0.0)
    calls = []
    model.bidirectional = lambda tk, xt, t: calls.append((tk, xt, t)) or torch.zeros_like(xt)
    first_chunk_loss(model, tok, x0, shared)
    (tk1, xt1, t1), (tk2, xt2, t2) = calls
    assert torch.equal(xt2, xt1[:4]) and torch.equal(t2, t1[:4]) and torch.equal(tk2, tok[4:])
    assert RECIPES["student"]["bindcfx"].contrast_min_t == 0.5


def test_the_learnability_probe_trains_a_fine_latent_model_end_to_end(tmp_path):
    """The `fine` autoencoder (16x16x4 latents) and a frame-0 teacher on it (`--recipe frame0 --preset fine`), as
    the learnability probe ran them; the signal probe reads the autoencoder beside the weights; bad presets are
    refused."""
    import pytest
    import torch

    from backend.autoencoder import AE_PRESETS
    from backend.loading import folder_autoencoder, load_autoencoder, load_model

    runs, models = tmp_path / "runs", tmp_path / "models"
    common = ["--runs-dir", str(runs), "--models-dir", str(models), "--steps", "2"]
    main(["ae", "--preset", "fine", *common])
    main(["teacher", "--recipe", "frame0", "--preset", "fine", *common])
    ae = load_autoencoder(folder_autoencoder(models))
    assert ae.cfg == AE_PRESETS["fine"] and ae.cfg.grid == 16
    assert (load_model(models / "teacher.safetensors").cfg.grid, ae.encode(torch.zeros(1, 3, 64, 64)).shape) == (
        16,
        (1, 4, 16, 16),
    )
    with pytest.raises(KeyError, match="unknown autoencoder preset"):
        main(["ae", "--preset", "huge", *common])
