"""The explorer serving a Wan generator (`python app.py --model wan:DIR`) on a tiny random folder built here:
its geometry (a 4x6 token grid over 64x96 frames, 2 layers, 4 video frames per latent frame) drives the views;
prompts are free text checked by the model; the world's grammar, guidance and evaluator do not apply."""

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from browser_app import ARGS, CHROMIUM, ROOT, serve  # noqa: E402
from gradio_client import Client  # noqa: E402
from wan_tiny import save_folder, tiny_wan  # noqa: E402

PROMPT = "a red cat walks on the beach"
VIEW = ("predicted", "mean", "inferno")
SIZE = (64, 96)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny Wan folder with a (random) salience head of its geometry beside it."""
    from backend.checkpoint import save
    from backend.salience import SalienceHead, SEHConfig

    model, dec = tiny_wan()
    folder = save_folder(tmp_path_factory.mktemp("wan"), model, dec)
    geo = model.geometry
    rows, cols = SIZE[0] // 16, SIZE[1] // 16
    cfg = SEHConfig(n_layer=geo.n_layer, key_dim=geo.n_head * geo.head_dim, grid=rows, cols=cols)
    save(folder / "salience_head.safetensors", SalienceHead(cfg), cfg, {})
    return folder


@pytest.fixture(scope="module")
def served(folder, tmp_path_factory):
    import os

    from explorer.serving import wan_explorer
    from explorer.sessions import SessionStore
    from explorer.ui import build

    os.environ["GRADIO_TEMP_DIR"] = str(tmp_path_factory.mktemp("gradio_tmp"))
    root = tmp_path_factory.mktemp("sessions")
    ex = wan_explorer(folder, size=SIZE, store=SessionStore(root))
    demo = build(ex)
    demo.queue(default_concurrency_limit=2)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, allowed_paths=[str(root)])
    yield url, ex
    demo.close()


def args(frames=9, policy="pafu", budget=5, prompt=PROMPT, guidance=None, view=VIEW):
    return (prompt, 0, frames, guidance, policy, budget, "frames", "", *view)


def test_the_api_generates_on_the_wan_geometry(served):
    url, ex = served
    c = Client(url, verbose=False)
    job = c.submit(*args(), api_name="/generate")
    job.result()
    out = job.outputs()[-1]
    assert "9/9 frames" in out[5] and "saved as session" in out[5]
    frame, heat, cache = (iio.imread(out[i]) for i in (0, 2, 3))
    assert frame.shape[1] / frame.shape[0] == pytest.approx(SIZE[1] / SIZE[0])  # 64x96 frames, not squares
    assert heat.shape[1] > heat.shape[0] and cache.ndim == 3
    assert "--model wan:" in out[-1] and "--size 64x96" in out[-1]  # the command line that makes this run
    (d,) = [w.run.data for w in ex.registry._items.values() if w.run is not None]
    assert (d.history.grid, d.history.cols, d.frames.shape[1:3]) == (4, 6, SIZE)
    # the teacher (the folder's bidirectional Wan2.1 transformer) scores the generated frames
    status = c.predict(*VIEW, api_name="/teacher_salience")[5]
    assert "teacher salience over frames" in status


def test_world_inputs_are_refused_with_a_message_and_compare_has_no_world_columns(served):
    url, _ = served
    c = Client(url, verbose=False)
    with pytest.raises(Exception, match="colour guidance applies"):
        c.predict(*args(guidance=2.0), api_name="/step_frame")
    with pytest.raises(Exception, match="prompt is empty"):
        c.predict(*args(prompt="   "), api_name="/step_frame")
    with pytest.raises(Exception, match="beyond this model's positions"):
        c.predict(*args(frames=99), api_name="/step_frame")
    job = c.submit(PROMPT, 0, 12, None, ["window"], ["1/2"], "", None, api_name="/compare")
    job.result()
    last = job.outputs()[-1]
    assert "12/12 frames" in last[6]
    headers = last[5]["headers"]
    assert "PSNR vs full (dB)" in headers and "adherence" not in headers and len(last[5]["data"]) == 2


pw = pytest.importorskip("playwright.sync_api", reason="playwright is installed by `make install`")


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed (.ci/run installs it)")
def test_the_browser_shows_a_wan_run(folder, tmp_path):
    """`python app.py --model wan:DIR`: the page names the model, offers its two layers, hides colour guidance,
    and draws the heatmap on the 4x6 token grid."""
    app = serve(tmp_path / "sessions", tmp_path / "gradio", ["--model", f"wan:{folder}", "--size", "64x96"])
    url = next(app)
    try:
        with pw.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1600, "height": 1300})
            page.set_default_timeout(60_000)
            page.goto(url)
            expect = pw.expect
            expect(page.get_by_text("the Wan generator")).to_be_visible()
            assert not page.locator("#guidance").is_visible()
            page.locator("#prompt textarea").fill(PROMPT)
            page.locator("#frames input").fill("12")
            page.locator("#frames input").press("Tab")
            page.locator("#step_frame_btn").click()
            expect(page.locator("#status")).to_contain_text("3/12 frames", timeout=60_000)
            page.wait_for_function(
                "() => { const i = document.querySelector('#heatmap img'); return i && i.naturalWidth > 0; }"
            )
            w, h = page.evaluate(
                "() => { const i = document.querySelector('#heatmap img'); return [i.naturalWidth, i.naturalHeight]; }"
            )
            assert w > h  # the frame's 3:2 shape, not the world's square
            page.locator("#layer input").click()
            options = page.get_by_role("option")
            names = [options.nth(i).inner_text() for i in range(options.count())]
            assert "layer 1" in names and "layer 2" not in names
            page.keyboard.press("Escape")
            (ROOT / "tests" / "artifacts").mkdir(exist_ok=True)
            page.screenshot(path=str(ROOT / "tests" / "artifacts" / "wan_generate.png"), full_page=True)
            browser.close()
    finally:
        next(app, None)
    assert np.isfinite(w)
