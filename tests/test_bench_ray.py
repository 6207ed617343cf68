"""The policy benchmark's Ray path (a local single-node cluster: Ray 2.x removed local_mode) gives the same
numbers as the local process pool."""

import json

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="ray is optional; .ci/run installs it to test this path")


def test_ray_path_matches_the_process_pool(tmp_path):
    from backend.bench.policies import policy_signature, run, runs_dir

    kw = dict(prompts=1, frames=4, policies=("window",), shares=(0.5,))
    a = run(**kw, workers=1, out=str(tmp_path / "a"), root=str(tmp_path / "ra"))
    b = run(**kw, out=str(tmp_path / "b"), root=str(tmp_path / "rb"), ray_address="local")
    assert a["rows"][0]["policy"] == b["rows"][0]["policy"] == "window"
    assert a["rows"][0]["psnr"][0] == pytest.approx(b["rows"][0]["psnr"][0])
    name = f"pair00_4_window_0.5000_{policy_signature('window')}.json"  # keyed by weights and settings
    ja = json.loads((runs_dir(tmp_path / "ra") / name).read_text())
    jb = json.loads((runs_dir(tmp_path / "rb") / name).read_text())
    assert np.allclose(ja["psnr"], jb["psnr"]) and ja["scores"] == jb["scores"]
    assert (tmp_path / "b" / "policies_quality.png").is_file() and (tmp_path / "b" / "policies_latency.png").is_file()
