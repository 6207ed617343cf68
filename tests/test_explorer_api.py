"""gradio_client against a launched app: generate, step, compare, export, session reload, bad input,
private sessions and 4 concurrent clients."""

import threading

import numpy as np
import pytest
from gradio_client import Client

from explorer.bench import run_args
from explorer.controller import Explorer
from explorer.sessions import SessionStore
from explorer.ui import build

PROMPT = "a red circle and a square on blue stripes behind a wall"
VIEW = ("attention", "mean", "inferno")


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    import os

    os.environ["GRADIO_TEMP_DIR"] = str(tmp_path_factory.mktemp("gradio_tmp"))
    from backend.loading import shipped

    model, ae = shipped()
    root = tmp_path_factory.mktemp("sessions")
    ex = Explorer(store=SessionStore(root), model=model, ae=ae)
    demo = build(ex)
    demo.queue(default_concurrency_limit=2)
    _, local, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, allowed_paths=[str(root)])
    yield local
    demo.close()


def gen_args(frames=8, policy="window", budget=4, unit="frames", params="", prompt=PROMPT, seed=0, guidance=1.0):
    return run_args(seed, frames, policy, budget, guidance, unit, params, prompt, VIEW)


def test_generate_streams_then_exports_and_reloads(url):
    c = Client(url, verbose=False)
    job = c.submit(*gen_args(), api_name="/generate")
    outs = list(job)
    job.result()
    status = job.outputs()[-1][5]
    assert "8/8 frames" in status and "saved as session" in status
    mp4 = c.predict(True, "attention", "mean", 3, api_name="/export_run_mp4")
    import imageio.v3 as iio

    assert iio.immeta(mp4, plugin="FFMPEG")["codec"].startswith("h264")
    sessions = c.predict(api_name="/list_sessions")[0]
    rows = sessions["data"] if isinstance(sessions, dict) else sessions
    sid = rows[0][0]
    out = c.predict(sid, "attention", "mean", "inferno", api_name="/load_session")
    msg = out[0] if isinstance(out, (list, tuple)) else out  # the Tabs output is not part of the API
    assert "reloaded" in msg
    assert len(outs) >= 1


def test_step_and_step_frame_advance_one_at_a_time(url):
    c = Client(url, verbose=False)
    out = c.predict(*gen_args(), api_name="/step")
    assert "0/8 frames" in out[5] and "prompt anchors" in out[5]
    out = c.predict(*gen_args(), api_name="/step_frame")
    assert "1/8 frames" in out[5]
    out = c.predict(*gen_args(), api_name="/step")
    assert "1/8 frames" in out[5] and "denoise step 1" in out[5]


def test_compare_via_api(url):
    c = Client(url, verbose=False)
    with pytest.raises(Exception, match="always keeps"):  # 1/8 of 6 frames is too small
        c.predict(PROMPT, 0, 6, 1.0, ["sink"], ["1/8"], "", None, api_name="/compare")
    job = c.submit(PROMPT, 0, 10, 3.0, ["window", "sink"], ["1/2"], "", None, api_name="/compare")
    job.result()
    last = job.outputs()[-1]
    assert "10/10 frames" in last[6]
    table = last[5]
    headers = table["headers"]
    assert "PSNR vs full (dB)" in headers and len(table["data"]) == 3
    path = c.predict(False, "score", 2, api_name="/export_compare_png")
    assert open(path, "rb").read(4) == b"\x89PNG"


@pytest.mark.parametrize(
    "args, match",
    [
        (gen_args(budget=150, unit="% of full"), "at most 100%"),  # rejected, as on the command line
        (
            gen_args(policy="pafu", params="alpha=banana", frames=24, budget=50, unit="% of full"),
            "alpha must be a number",
        ),
        (gen_args(budget=0), "positive"),
        (gen_args(budget=40, frames=8), "above the full cache"),
        (gen_args(frames=100000), "limit"),
        (gen_args(prompt="a purple circle"), "unknown word"),
    ],
)
def test_bad_input_gives_a_clear_error_and_the_app_keeps_serving(url, args, match):
    c = Client(url, verbose=False)
    with pytest.raises(Exception, match=match):
        c.predict(*args, api_name="/step_frame")
    out = c.predict(*gen_args(frames=3, budget=2), api_name="/step_frame")  # still serving
    assert "1/3 frames" in out[5]


def test_session_names_with_separators_are_rejected(url):
    c = Client(url, verbose=False)
    c.predict(*gen_args(frames=3, budget=2), api_name="/step_frame")
    with pytest.raises(Exception, match="cannot contain"):
        c.predict("../evil", api_name="/save_session")
    with pytest.raises(Exception, match="."):
        c.predict("../../etc", "attention", "mean", "inferno", api_name="/load_session")


def test_two_clients_do_not_see_each_others_runs(url):
    a, b = Client(url, verbose=False), Client(url, verbose=False)
    a.predict(*gen_args(frames=5), api_name="/step_frame")
    a.predict(*gen_args(frames=5), api_name="/step_frame")
    out = b.predict(0, False, *VIEW, api_name="/view")
    assert "No run yet" in out[5]


def test_four_concurrent_clients_all_complete(url):
    results, errors = [], []

    def work(seed):
        try:
            c = Client(url, verbose=False)
            job = c.submit(*gen_args(frames=6, seed=seed, policy="h2o", budget=3), api_name="/generate")
            results.append(job.result()[5])  # the generator's last output
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    assert len(results) == 4 and all("6/6 frames" in r for r in results)
    assert len(set(np.array([r.split("seed ")[1][:1] for r in results]))) == 4


def test_the_explorer_benchmark_speaks_the_apps_api(url):
    """`python -m explorer.bench` builds its calls with run_args (so do these tests): with its defaults they must
    match the app's inputs (the bench went stale once when the colour-guidance input was added)."""
    c = Client(url, verbose=False)
    out = c.predict(*run_args(0, 3, "window", 2), api_name="/step_frame")
    assert "1/3 frames" in out[5]


def test_the_readmes_api_example_runs(url, readme_python):
    """The README's gradio_client example, verbatim but for the URL and 24 frames instead of 64 (12.5% of
    fewer frames would be below what PaFu-KV always keeps)."""
    code = readme_python[0]
    assert code.count('Client("http://127.0.0.1:7860")') == 1 and code.count(", 0, 64, 4,") == 2
    ns = {}
    exec(code.replace("http://127.0.0.1:7860", url).replace(", 0, 64, 4,", ", 0, 24, 4,"), ns)
    assert str(ns["mp4"]).endswith(".mp4") and str(ns["grid"]).endswith(".mp4")


def test_runs_table_and_overlay_via_api(url):
    c = Client(url, verbose=False)
    c.predict(*gen_args(frames=4, budget=2), api_name="/step_frame")
    c.predict("for the runs table", api_name="/save_session")
    table, pick = c.predict(api_name="/runs_table")
    assert "PSNR vs full (dB)" in table["headers"] and len(table["data"]) >= 1
    keys = [row[0] for row in table["data"]]
    psnr, occ = c.predict(keys[:2], api_name="/runs_overlay")
    assert occ is not None
    with pytest.raises(Exception, match="nope#0"):  # not a run of the table: a clear refusal
        c.predict(["nope#0"], api_name="/runs_overlay")
