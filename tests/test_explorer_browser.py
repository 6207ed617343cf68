"""End to end in a real browser: Playwright (Python) driving Debian's chromium at /usr/bin/chromium.

The app runs in a subprocess (as `python app.py` does) with its own sessions folder; screenshots of every
screen are saved to tests/artifacts/ for people to look at."""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
pw = pytest.importorskip("playwright.sync_api", reason="playwright is installed by `make install`")
if not Path(CHROMIUM).exists():
    pytest.skip("Debian chromium is not installed (.ci/run installs it)", allow_module_level=True)

ROOT = Path(__file__).resolve().parent.parent
ART = ROOT / "tests" / "artifacts"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage"]
PROMPT = "a red circle and a square on blue stripes behind a wall"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    port = free_port()
    sessions = tmp_path_factory.mktemp("sessions")
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False",
           "GRADIO_TEMP_DIR": str(tmp_path_factory.mktemp("gradio_tmp"))}
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--sessions", str(sessions)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    t0 = time.time()
    while time.time() - t0 < 90:
        try:
            urllib.request.urlopen(url + "/gradio_api/info", timeout=2)
            break
        except Exception:
            if proc.poll() is not None:
                raise RuntimeError("app exited:\n" + proc.stdout.read())
            time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError("app did not start in 90 s")
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def page(app_url):
    ART.mkdir(exist_ok=True)
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        ctx = browser.new_context(viewport={"width": 1600, "height": 1300}, accept_downloads=True)
        pg = ctx.new_page()
        pg.set_default_timeout(60_000)
        pg.goto(app_url)
        pg.wait_for_load_state("load")
        yield pg
        browser.close()


def img_src(page, sel: str) -> str:
    return page.locator(f"{sel} img").first.get_attribute("src") or ""


def click_image(page, sel: str, x: int, y: int) -> None:
    """Click pixel (x, y) of the image in `sel` once it has loaded: Gradio's Image maps the click through the
    img's natural size and drops it while the new src is still loading (naturalWidth 0), which is what a
    click on a just-redrawn image under load met."""
    page.wait_for_function(f"() => {{ const i = document.querySelector('{sel} img'); "
                           "return i && i.complete && i.naturalWidth > 0; }", timeout=20_000)
    page.locator(f"{sel} img").click(position={"x": x, "y": y})


def step_back(page, press, scrubber: str, image: str, newest: int) -> None:
    """`press` (the previous-frame key or button) moves the scrubber from the newest frame to the one before
    and redraws `image`. A run's completion message can land just after its last streamed update (which the
    callers' status checks see) and set the scrubber back to the newest frame: press again only then."""
    before = img_src(page, image)
    num = page.locator(f"{scrubber} input[type=number]")
    moved = (f"([b, want]) => {{ const i = document.querySelector('{image} img'); "
             f"const n = document.querySelector('{scrubber} input[type=number]'); "
             "return i && i.src !== b && n && n.value === want; }")
    for attempt in range(3):
        press()
        try:
            page.wait_for_function(moved, arg=[before, str(newest - 1)], timeout=15_000)
            return
        except pw.TimeoutError:
            value = num.input_value()
            assert value == str(newest) and attempt < 2, f"{scrubber} at {value!r} after a step back (attempt {attempt + 1})"


def test_generate_heatmap_timeline_scrubber(page):
    expect = pw.expect
    page.locator("#prompt textarea").fill(PROMPT)
    page.locator("#frames input").fill("10")
    page.locator("#frames input").press("Tab")
    page.locator("#step_frame_btn").click()
    expect(page.locator("#status")).to_contain_text("1/10 frames", timeout=60_000)
    expect(page.locator("#heatmap img")).to_be_visible()
    expect(page.locator("#occupancy .js-plotly-plot")).to_be_visible()
    first_heat = img_src(page, "#heatmap")
    page.locator("#run_btn").click()
    expect(page.locator("#status")).to_contain_text("10/10 frames", timeout=120_000)
    expect(page.locator("#status")).to_contain_text("saved as session", timeout=30_000)
    assert img_src(page, "#heatmap") != first_heat                     # the heatmap updated
    n_traces = page.locator("#occupancy .js-plotly-plot .scatterlayer .trace").count()
    assert n_traces >= 4                                                 # one line per layer (+ bytes)
    # the scrubber: keyboard left arrow moves to frame 8 and redraws the frame
    page.evaluate("() => document.activeElement && document.activeElement.blur()")   # keys go to the page
    step_back(page, lambda: page.keyboard.press("ArrowLeft"), "#scrubber", "#frame", 9)
    # drill-down: click a token on the heatmap
    click_image(page, "#heatmap", 100, 120)
    expect(page.locator("#token_info")).to_contain_text("frame 8", timeout=20_000)
    expect(page.locator("#token_plot .js-plotly-plot")).to_be_visible(timeout=20_000)
    page.wait_for_timeout(500)
    page.screenshot(path=str(ART / "generate.png"), full_page=True)


def test_compare_two_way_and_download_mp4(page, tmp_path):
    expect = pw.expect
    page.get_by_role("tab", name="Compare").click()
    page.locator("#frames input").fill("16")
    page.locator("#frames input").press("Tab")
    # exactly one policy (window) at 1/8 against the full cache: a 2-way compare
    boxes = page.locator("#cmp_policies label")
    for i in range(boxes.count()):
        inp = boxes.nth(i).locator("input")
        want = boxes.nth(i).inner_text().strip() == "window"
        if inp.is_checked() != want:
            boxes.nth(i).click()
    page.locator("#compare_btn").click()
    expect(page.locator("#cmp_status")).to_contain_text("16/16 frames", timeout=120_000)
    expect(page.locator("#cmp_grid img")).to_be_visible()
    expect(page.locator("#cmp_psnr .js-plotly-plot")).to_be_visible()
    expect(page.locator("#cmp_table")).to_contain_text("PSNR")
    step_back(page, lambda: page.locator("#cmp_prev").click(), "#cmp_scrubber", "#cmp_grid", 15)
    page.screenshot(path=str(ART / "compare.png"), full_page=True)
    page.get_by_text("Export").last.click()
    page.locator("#cmp_export_mp4").click()
    link = page.locator("#cmp_export_file a").first
    expect(link).to_be_visible(timeout=60_000)
    with page.expect_download() as dl:
        link.click()
    path = tmp_path / "grid.mp4"
    dl.value.save_as(path)
    import imageio.v3 as iio
    meta = iio.immeta(path, plugin="FFMPEG")
    assert meta["codec"].startswith("h264")
    assert iio.imread(path, index=0, plugin="FFMPEG").shape[0] > 100
    page.screenshot(path=str(ART / "compare_export.png"), full_page=True)


def test_bad_input_and_sessions_tab(page):
    expect = pw.expect
    page.get_by_role("tab", name="Generate").click()
    page.locator("#prompt textarea").fill("a purple circle")
    page.locator("#step_btn").click()
    expect(page.get_by_text("unknown word").first).to_be_visible(timeout=20_000)
    page.locator("#prompt textarea").fill(PROMPT)
    page.get_by_role("tab", name="Sessions").click()
    page.locator("#sessions_refresh").click()
    expect(page.locator("#sessions_table")).to_contain_text("window", timeout=20_000)
    page.locator("#session_name textarea").fill("../evil")
    page.locator("#session_save").click()
    expect(page.get_by_text("cannot contain").first).to_be_visible(timeout=20_000)
    page.screenshot(path=str(ART / "sessions.png"), full_page=True)
    page.get_by_role("tab", name="Definitions").click()
    expect(page.locator("#definitions_text")).to_contain_text("Salience")
    page.screenshot(path=str(ART / "definitions.png"), full_page=True)


def teardown_module():
    # keep the artifacts folder small: screenshots only
    for p in ART.glob("*"):
        if p.suffix not in (".png",):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink()
