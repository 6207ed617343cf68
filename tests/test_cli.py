"""Bad input through the command line: a clear message, exit code 2, and no (partial) output file."""

import subprocess
import sys

import numpy as np
import pytest

from backend.__main__ import main
from backend.loading import DEFAULT_AE, DEFAULT_MODEL


def gen(tmp_path, *args, out="v.mp4"):
    return main(["generate", "--quiet", "--no-timings", "--out", str(tmp_path / out), *args])


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--prompt", "a purple circle on stripes"], "vocabulary"),
        (["--prompt", "a red circle on stripes", "--frames", "0"], "positive"),
        (["--prompt", "a red circle on stripes", "--frames", "-4"], "positive"),
        (["--prompt", "a red circle on stripes", "--frames", "1000000000"], "limit"),
        (["--prompt", "a red circle on stripes", "--frames", "99000"], "GiB"),
        (["--prompt", "a red circle on stripes", "--model", "/nonexistent/model.safetensors"], "not found"),
        (["--prompt", "a red circle on stripes", "--policy", "nope"], "unknown policy"),
        (["--prompt", "a red circle on stripes", "--sampler", "stepz=3"], "unknown sampler setting"),
        (["--prompt", "a red circle on stripes", "--sampler", "steps"], "KEY=VALUE"),
    ],
)
def test_bad_input_is_explained_and_writes_nothing(tmp_path, capsys, args, needle):
    assert gen(tmp_path, *args) == 2
    assert needle in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_model_from_a_training_folder_decodes_with_that_folders_autoencoder(tmp_path, models_folder):
    """`--model DIR/student.safetensors` without `--ae` decodes with DIR's autoencoder when it has one (the
    one that student was trained on), as the explorer and the benchmarks do."""
    import imageio.v3 as iio

    own, _ = models_folder("own", own_autoencoder=True)
    common = ["--prompt", "a red circle on stripes", "--frames", "2", "--model", str(own / "student.safetensors")]
    assert gen(tmp_path, *common, out="beside.mp4") == 0
    assert gen(tmp_path, *common, "--ae", str(own / "autoencoder.safetensors"), out="own.mp4") == 0
    assert gen(tmp_path, *common, "--ae", str(DEFAULT_AE), out="shipped.mp4") == 0
    beside, mine, shipped = (iio.imread(tmp_path / f).astype(int) for f in ("beside.mp4", "own.mp4", "shipped.mp4"))
    assert np.array_equal(beside, mine) and np.abs(beside - shipped).mean() > 1.0


def test_pafu_scores_with_the_salience_head_of_the_models_folder(tmp_path, models_folder, capsys):
    """`--model DIR/student.safetensors --policy pafu` scores with DIR's salience head, never the shipped one
    (distilled for another student): a folder without one is refused with the command that writes it, and a
    folder holding another head than the shipped one changes what PaFu-KV keeps."""
    import shutil

    import torch

    from backend.build import build_policy
    from backend.loading import MODELS_DIR, load_head, load_model

    own, _ = models_folder("own")
    common = [
        "--prompt",
        "a red circle on stripes",
        "--frames",
        "8",
        "--policy",
        "pafu",
        "--budget",
        "3f",
        "--model",
        str(own / "student.safetensors"),
    ]
    assert gen(tmp_path, *common, out="none.mp4") == 2
    assert "no salience head" in capsys.readouterr().err and not (tmp_path / "none.mp4").exists()
    shutil.copy(MODELS_DIR / "salience_head_hindsight.safetensors", own / "salience_head.safetensors")
    model = load_model(own / "student.safetensors")
    pol = build_policy("pafu", "3f", 8, model, models=own)
    hind = dict(load_head(labels="hindsight").named_parameters())
    assert all(torch.equal(p, hind[k]) for k, p in pol.learned_head().named_parameters())
    assert gen(tmp_path, *common, out="own.mp4") == 0


def test_corrupt_checkpoint(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(DEFAULT_MODEL.read_bytes()[:5000])
    assert gen(tmp_path, "--prompt", "a red circle on stripes", "--model", str(bad)) == 2
    assert "corrupt" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.safetensors"]


def test_bad_output_suffix(tmp_path, capsys):
    assert gen(tmp_path, "--prompt", "a red circle on stripes", out="v.avi") == 2
    assert ".mp4" in capsys.readouterr().err


def test_generate_writes_playable_mp4_and_timings(tmp_path):
    import imageio.v3 as iio

    out = tmp_path / "ok.mp4"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "backend",
            "generate",
            "--prompt",
            "a red circle on blue stripes",
            "--frames",
            "4",
            "--preset",
            "tiny",
            "--out",
            str(out),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert len([ln for ln in r.stdout.splitlines() if ln.strip()[:1].isdigit()]) == 4  # one timing line per frame
    frames = iio.imread(out)
    assert frames.shape == (4, 256, 256, 3)
    assert out.read_bytes()[4:8] == b"ftyp"
    import imageio_ffmpeg

    probe = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-i", str(out)], capture_output=True, text=True).stderr
    assert "h264" in probe and "yuv420p" in probe
    assert np.asarray(frames).std() > 0


def test_help_documents_every_option():
    r = subprocess.run([sys.executable, "-m", "backend", "generate", "--help"], capture_output=True, text=True)
    for opt in ("--prompt", "--frames", "--seed", "--policy", "--out", "--fps", "--model", "--sampler"):
        assert opt in r.stdout


def test_policies_listing(capsys):
    assert main(["policies"]) == 0
    out = capsys.readouterr().out
    assert "full" in out and "window" in out
    assert "alpha=0.0" in out and "labels=sse" in out and "storage=fp32|bf16|int8|int4|int2" in out  # parameters
    pafu = next(line for line in out.splitlines() if line.startswith("pafu"))
    assert "granularity=strata" in pafu and "_last" not in pafu  # a changed shared default, no private state
    reads = {
        line.split()[0]: line.split()[1]
        for line in out.splitlines()[1:]
        if line
        and not line.startswith(" ")
        and line.split()[0] in ("full", "window", "h2o", "deep_forcing", "pafu", "tempcache")
    }
    assert reads == {"full": "-", "window": "-", "h2o": "attn", "deep_forcing": "q.k", "pafu": "-", "tempcache": "-"}
    assert DEFAULT_AE.is_file()


def test_sampler_settings_reach_the_stepper():
    from backend.flow import sampler_config

    cfg = sampler_config(["steps=8", "renoise=false", "first_steps=none", "first_guidance=2.5"])
    assert (cfg.steps, cfg.renoise, cfg.first_steps, cfg.first_guidance) == (8, False, None, 2.5)
    # 1 and 1.0 are one sampler: equal configs and one benchmark folder (results are keyed by the sampler)
    from backend.config import SamplerConfig
    from backend.loading import weights_tag

    off = sampler_config(["guidance=1", "first_guidance=1"])
    assert off == SamplerConfig(guidance=1.0, first_guidance=1.0) and isinstance(off.guidance, float)
    assert weights_tag(sampler=off) == weights_tag(sampler=SamplerConfig(guidance=1.0, first_guidance=1.0))
    assert weights_tag(sampler=off) != weights_tag()
    with pytest.raises(ValueError, match="unknown sampler setting"):
        sampler_config(["guidence=2"])


def test_sampler_bench_settings_parse_or_explain():
    from backend.bench.sampler import _differences, parse_setting
    from backend.config import SamplerConfig

    label, cfg = parse_setting("six steps: steps=6 guidance=2")
    assert label == "six steps" and (cfg.steps, cfg.guidance, cfg.first_guidance) == (
        6,
        2.0,
        SamplerConfig().first_guidance,
    )
    assert _differences(cfg) == "steps=6 guidance=2.0"
    assert (
        parse_setting("shipped:") == ("shipped", SamplerConfig()) and _differences(SamplerConfig()) == "shipped sampler"
    )
    for bad, msg in (
        ("no colon", "LABEL: KEY=VALUE"),
        (": steps=6", "LABEL: KEY=VALUE"),
        ("x: stepz=6", "unknown sampler setting"),
    ):
        with pytest.raises(ValueError, match=msg):
            parse_setting(bad)


@pytest.mark.parametrize(
    "argv,msg",
    [
        (["policies", "--policies", "window,nosuch"], "unknown policy 'nosuch'; known:"),
        (["policies", "--policies", "h2o:alpah=3"], "unknown parameter 'alpah' for H2O (h2o)"),
        (["policies", "--shares", "0.125,2"], "shares must be in (0, 1]"),
        (["policies", "--shares", "1/8"], "--shares expects comma-separated numbers"),
        (["policies", "--sampler", "guidence=2"], "unknown sampler setting"),
        (["weights", "nope.safetensors"], "no weights file nope.safetensors"),
        (["first", "nope.safetensors"], "no weights file nope.safetensors"),
        (["first", "--rerender", "nope.json"], "no stored first-frame results at nope.json"),
        (["decoder", "nope.safetensors"], "no weights file nope.safetensors"),
        (["decoder", "assets/models/autoencoder.safetensors", "assets/models/student.safetensors"], "another encoder"),
        (["sampler", "--setting", "no colon"], "LABEL: KEY=VALUE"),
    ],
)
def test_bench_cli_rejects_bad_input_before_any_work(argv, msg, capsys, tmp_path):
    from backend.bench.__main__ import main

    with pytest.raises(SystemExit) as e:
        main(argv + ["--out", str(tmp_path)] if argv[0] != "weights" else argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and msg in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # nothing written


def test_reads_label_shows_a_probe_share(monkeypatch, capsys):
    """A policy that forms probabilities for only some of a commit's queries says which share, in the
    listing and in the explorer's help."""
    from backend import policies as P
    from explorer.ui import policy_help

    monkeypatch.setitem(P.POLICIES, "probed", P.Entry(P.H2O, "H2O on probes", {"probe": 0.125}))
    short, sentence = P.describe_reads("probed")
    assert short == "attn 0.125" and "12.5% of each commit's queries" in sentence
    assert P.describe_reads("window") == P.READS["none"]
    assert "12.5% of each commit's queries" in policy_help("probed")
    assert main(["policies"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("probed"))
    assert "attn 0.125" in line
