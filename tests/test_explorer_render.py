"""explorer.render (image functions) and explorer.export (file writers): fast, no model."""

import csv
import json
import os
import zipfile

import imageio.v3 as iio
import numpy as np
import pytest

from explorer import export, render


def _video(T, S=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (T, S, S, 3), dtype=np.uint8)


def _no_partials(folder):
    return not [p for p in folder.rglob("*") if p.name.startswith(export.PARTIAL)]


# ------------------------------------------------------------------------------------------ render


def test_colourise_fixed_scale_and_nan():
    a = np.array([[0.5, 0.0], [1.0, np.nan]])
    b = np.array([[0.5, 0.9], [0.1, 0.2]])
    ca, cb = render.colourise(a, 0, 1, 32), render.colourise(b, 0, 1, 32)
    assert ca.shape == (32, 32, 3) and ca.dtype == np.uint8
    assert (ca[:16, :16] == ca[0, 0]).all()  # crisp cell
    assert (ca[:16, :16] == cb[:16, :16]).all()  # 0.5 has one colour whatever the others
    assert not (ca[0, 0] == ca[16, 16]).all()  # 1.0 differs from 0.5
    nan = ca[16:, 16:].reshape(-1, 3)
    assert (nan[:, 0] == nan[:, 1]).all() and (nan[:, 1] == nan[:, 2]).all()  # grey
    assert set(np.unique(nan)) == {render.NAN_GREY, render.NAN_HATCH}
    assert (nan == render.NAN_GREY).mean() > 0.7
    # values outside [vmin, vmax] are clipped; gamma changes mid values only
    assert (render.colourise(np.array([[5.0]]), 0, 1, 1) == ca[16, 0]).all()
    g = render.colourise(np.array([[0.5, 1.0]]).T @ np.ones((1, 2)), 0, 1, 2, gamma=2.0)
    assert not (g[0, 0] == ca[0, 0]).all() and (g[1, 0] == ca[16, 0]).all()
    with pytest.raises(ValueError):
        render.colourise(a, 0, 1, 32, cmap="nope")


def test_overlay_shape_blend_and_nan():
    frame = np.full((16, 16, 3), 200, np.uint8)
    vals = np.zeros((4, 4))
    vals[0, 0] = np.nan
    out = render.overlay(frame, vals, 0, 1, scale=4)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert (out[:16, :16] == 70).all()  # NaN cell: 200 * 0.35
    c0 = render.colourise(np.zeros((1, 1)), 0, 1, 1)[0, 0].astype(float)
    assert np.allclose(out[32, 32], 0.5 * 200 + 0.5 * c0, atol=1)
    assert (render.overlay(frame, vals, 0, 1, scale=2, alpha=0.0)[20, 20] == 200).all()


def test_upscale_grid_lines_and_mark():
    img = np.zeros((4, 4, 3), np.uint8)
    img[0, 1] = 9
    up = render.upscale(img, 3)
    assert up.shape == (12, 12, 3) and (up[0:3, 3:6] == 9).all()
    assert render.upscale(np.zeros((2, 4, 4, 3), np.uint8), 2).shape == (2, 8, 8, 3)
    lines = render.token_grid_lines(np.zeros((64, 64, 3), np.uint8), 4, alpha=0.5)
    assert (lines[16, :] == 128).all() and (lines[:, 48] == 128).all() and (lines[5, 5] == 0).all()
    m = render.mark_token(np.zeros((64, 64, 3), np.uint8), 4, 1, 2)
    assert (m[16, 32:48] == (0, 255, 255)).all() and (m[31, 32:48] == (0, 255, 255)).all()
    assert (m[20:28, 34:46] == 0).all() and m[:16].max() == 0
    with pytest.raises(ValueError):
        render.mark_token(m, 4, 4, 0)


def test_colourbar_top_is_vmax_colour():
    bar = render.colourbar(256, 0.0, 2.0, "salience", cmap="viridis")
    assert bar.shape == (256, 70, 3)
    col = bar[:, render.BAR_X0 + render.BAR_W // 2]  # (256, 3) down the middle of the strip
    coloured = ~((col == 255).all(-1) | (col == 160).all(-1))  # not background, not the grey frame
    runs, start = [], None  # the strip is the longest run of coloured rows
    for r, c in enumerate(list(coloured) + [False]):
        if c and start is None:
            start = r
        elif not c and start is not None:
            runs.append((r - start, start, r - 1))
            start = None
    n, top, bottom = max(runs)
    assert n > 200
    vmax_c = render.colourise(np.array([[2.0]]), 0, 2, 1, "viridis")[0, 0]
    vmin_c = render.colourise(np.array([[0.0]]), 0, 2, 1, "viridis")[0, 0]
    assert (col[top] == vmax_c).all() and (col[bottom] == vmin_c).all()
    assert (col[top : bottom + 1, 1].astype(int)).tolist() == sorted(
        col[top : bottom + 1, 1].astype(int).tolist(), reverse=True
    )  # viridis G falls
    text = bar[:, render.BAR_X0 + render.BAR_W + 5 :]
    assert (text < 128).any()  # tick labels are drawn
    assert (bar[:12] < 128).any()  # the label on top


def test_label_clips_long_text():
    img = np.full((40, 30, 3), 100, np.uint8)
    out = render.label(img, "a very long label that does not fit | frame 12")
    assert out.shape == img.shape and (img == 100).all()
    assert (out[0, :] == 0).all() and (out == 255).any() and (out[-1, -1] == 100).all()
    low = render.label(img, "frame 3", bottom=True)  # clear of the UI's own label chip
    assert (low[-1, 0] == 0).all() and (low[0, 0] == 100).all() and (low[-12:] == 255).any()


def test_diff_map_zero_for_identical():
    a = _video(1)[0]
    d = render.diff_map(a, a.copy())
    zero = render.colourise(np.zeros((1, 1)), 0, 1, 1, "magma")[0, 0]
    assert d.shape == a.shape and (d == zero).all()
    assert not (render.diff_map(a, 255 - a) == zero).all(-1).all()


def test_tile_even_dims_and_placement():
    p = [np.full((5, 7, 3), i * 40, np.uint8) for i in range(1, 4)]
    t = render.tile(p, cols=2, pad=4, bg=255)
    assert t.shape == (14, 18, 3)
    assert t.shape[0] % 2 == 0 and t.shape[1] % 2 == 0
    assert (t[0:5, 0:7] == 40).all() and (t[0:5, 11:18] == 80).all() and (t[9:14, 0:7] == 120).all()
    assert (t[9:14, 11:18] == 255).all() and (t[0:5, 7:11] == 255).all()
    mixed = render.tile([np.zeros((3, 3, 3), np.uint8), np.zeros((6, 5, 3), np.uint8)], pad=2)
    assert mixed.shape[:2] == (6, 12) and (mixed[3:, :3] == 255).all() and (mixed[:, 7:12] == 0).all()
    assert (mixed[:, 5:7] == 255).all()


def test_hstack_bar_resizes():
    img = np.zeros((100, 50, 3), np.uint8)
    out = render.hstack_bar(img, render.colourbar(256, 0, 1, "x"), pad=4)
    assert out.shape == (100, 50 + 4 + 70, 3) and (out[:, 50:54] == 255).all()


# ------------------------------------------------------------------------------------------ export


def test_comparison_frames_lengths_and_bar():
    a, b = _video(6, seed=1), _video(4, seed=2)
    out = export.comparison_frames([a, b], ["full", "window"], scale=2)
    assert out.shape == (4, 32, 32 + 4 + 32, 3)
    assert (out[0, 24:32, 0:32] == render.upscale(a[0], 2)[24:32]).all()
    ov = np.random.default_rng(0).random((6, 4, 4))
    ov[:, 0, 0] = np.nan
    withbar = export.comparison_frames([a, b], ["full", "window"], scale=3, overlays=[None, ov])
    assert withbar.shape[0] == 4 and withbar.shape[1] % 2 == 0 and withbar.shape[2] % 2 == 0
    assert withbar.shape[1:3] == (48, 48 + 4 + 48 + 4 + 70)
    assert (withbar[:, :, 100:104] == 255).all()  # gap before the bar
    assert (withbar[0, 24:48, 52:100] == render.overlay(b[0], ov[0], 0, 1, 3)[24:48]).all()
    part = export.comparison_frames([a, b], ["x", "y"], frame_range=(1, 3), cols=1)
    assert part.shape == (2, 64 + 4 + 64, 64, 3)
    with pytest.raises(ValueError):
        export.comparison_frames([a, b], ["only one"])


def test_write_mp4_round_trip_and_odd_size(tmp_path):
    frames = _video(6, S=16)
    frames = np.concatenate([frames, frames[:, :, :5]], axis=2)[:, :15]  # (6, 15, 21, 3) odd
    p = export.write_mp4(frames, tmp_path / "sub" / "v.mp4", fps=12)
    assert p.exists() and (p.stat().st_mode & 0o777) == 0o644
    meta = iio.immeta(p)
    assert meta["codec"] == "h264" and tuple(meta["size"]) == (22, 16)  # (W, H) padded to even
    first = iio.imread(p, index=0)
    assert first.shape == (16, 22, 3)
    smooth = np.repeat(np.linspace(0, 255, 22, dtype=np.uint8)[None, :, None], 16, 0).repeat(3, 2)
    export.write_mp4(np.stack([smooth] * 3), p)  # overwrite in place
    assert np.abs(iio.imread(p, index=0).astype(int) - smooth).mean() < 6
    assert _no_partials(tmp_path)
    with pytest.raises(ValueError):
        export.write_mp4(frames.astype(np.float32), tmp_path / "bad.mp4")
    assert not (tmp_path / "bad.mp4").exists() and _no_partials(tmp_path)


def test_write_gif_frame_count(tmp_path):
    p = export.write_gif(_video(5), tmp_path / "v.gif", fps=10)
    assert iio.imread(p, index=None).shape[0] == 5
    assert iio.immeta(p, index=0)["duration"] == 100 and _no_partials(tmp_path)


def test_write_png(tmp_path):
    img = _video(1)[0]
    p = export.write_png(img, tmp_path / "a.png")
    assert (iio.imread(p) == img).all() and _no_partials(tmp_path)


def test_cached_png_is_content_addressed_and_never_rewritten(tmp_path):
    a, b = _video(2)
    pa = export.cached_png(a, tmp_path)
    assert (iio.imread(pa) == a).all() and _no_partials(tmp_path)
    ino = os.stat(pa).st_ino
    assert export.cached_png(a.copy(), tmp_path) == pa and os.stat(pa).st_ino == ino  # same bytes: not rewritten
    pb = export.cached_png(b, tmp_path)
    assert pb != pa and (iio.imread(pb) == b).all()


def test_write_csv_and_json(tmp_path):
    rows = [{"a": np.float32(1.23456789), "b": np.int64(3)}, {"b": float("nan"), "c": True, "a": 1e-7}]
    p = export.write_csv(rows, tmp_path / "t.csv")
    with open(p, newline="") as f:
        got = list(csv.reader(f))
    assert got == [["a", "b", "c"], ["1.23457", "3", ""], ["1e-07", "", "True"]]
    obj = {
        "x": np.arange(3),
        "y": np.float64("nan"),
        "z": [np.float32(0.5), np.array([1.0, np.nan])],
        "n": np.int32(7),
        "k": (1, 2),
    }
    q = export.write_json(obj, tmp_path / "t.json")
    assert json.loads(q.read_text()) == {"x": [0, 1, 2], "y": None, "z": [0.5, [1.0, None]], "n": 7, "k": [1, 2]}
    assert "NaN" not in q.read_text() and _no_partials(tmp_path)


def test_zip_folder(tmp_path):
    src = tmp_path / "run"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("A")
    (src / "sub" / "b.csv").write_text("B")
    p = export.zip_folder(src, src / "run.zip")  # the archive inside the folder is left out of itself
    with zipfile.ZipFile(p) as zf:
        assert sorted(zf.namelist()) == ["a.txt", "sub/b.csv"] and zf.read("sub/b.csv") == b"B"
    export.zip_folder(src, src / "run.zip")  # again: still not containing itself
    with zipfile.ZipFile(p) as zf:
        assert sorted(zf.namelist()) == ["a.txt", "sub/b.csv"]
    assert _no_partials(tmp_path)


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    with pytest.raises(TypeError):
        export.write_json({"f": object()}, tmp_path / "x.json")
    old = export.write_png(_video(1)[0], tmp_path / "keep.gif").read_bytes()

    def boom(path, *a, **k):
        open(path, "wb").write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(export.iio, "imwrite", boom)
    with pytest.raises(OSError):
        export.write_gif(_video(2), tmp_path / "keep.gif")
    assert [p.name for p in tmp_path.iterdir()] == ["keep.gif"] and (tmp_path / "keep.gif").read_bytes() == old


def test_labels_stack_from_the_bottom_without_overlap():
    img = np.full((100, 200, 3), 200, np.uint8)
    one = render.label(img, "first", bottom=True)
    two = render.label(one, "second", bottom=True, line=1)

    def dark(im):  # rows of the black backing box at x = 2
        return np.flatnonzero((im[:, 2] == 0).all(1))

    r1, r2 = dark(one), dark(two)
    assert r1.max() == 99 and set(r1) <= set(r2)  # the first box untouched, at the bottom edge
    assert r2.min() < r1.min() and r2.max() == 99  # the second sits right above it
    assert len(r2) == 2 * len(r1)
    assert (render.label(img, "x", bottom=True, line=50)[0, 2] == 0).all()  # clamped inside the image
