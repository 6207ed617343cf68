"""The policy benchmark resumes from its per-run JSONs, and rescores saved frames (no rerun) when the
evaluator's definitions change; results without saved frames are rerun."""

import json

from backend.atomic import PARTIAL
from backend.consistency import EVALUATOR_VERSION


def test_policy_bench_resumes_and_rescores_after_an_evaluator_change(tmp_path):
    from backend.bench.policies import policy_signature, run, runs_dir

    kw = dict(
        prompts=1,
        frames=4,
        policies=("window",),
        shares=(0.5,),
        workers=1,
        out=str(tmp_path / "o"),
        root=str(tmp_path / "r"),
    )
    run(**kw)
    f = runs_dir(tmp_path / "r") / f"pair00_4_window_0.5000_{policy_signature('window')}.json"
    first = json.loads(f.read_text())
    assert first["evaluator"] == EVALUATOR_VERSION and f.with_suffix(".npz").is_file()

    def stale():
        j = json.loads(f.read_text())
        j["evaluator"], j["scores"]["adherence"] = EVALUATOR_VERSION - 1, -5.0
        f.write_text(json.dumps(j))

    stale()
    run(**kw)
    again = json.loads(f.read_text())
    assert again["scores"] == first["scores"] and again["evaluator"] == EVALUATOR_VERSION
    assert again["total_s"] == first["total_s"]  # rescored from its frames, not rerun
    stale()
    f.with_suffix(".npz").unlink()
    run(**kw)
    redone = json.loads(f.read_text())
    assert redone["scores"] == first["scores"] and redone["total_s"] != first["total_s"]  # rerun, same noise
    f.write_text('{"pair": 0, "scor')  # a run killed mid-write (before atomic writes)
    run(**kw)
    healed = json.loads(f.read_text())
    assert healed["scores"] == first["scores"] and healed["total_s"] != redone["total_s"]  # redone, not a crash
    assert not list(f.parent.glob(f"{PARTIAL}*"))  # no temporary files left behind


def test_result_store_writes_atomically_and_reads_damage_as_missing(tmp_path):
    from backend.bench.store import read_result, write_result

    p = tmp_path / "a" / "b.json"
    assert read_result(p) is None
    write_result(p, {"x": [1, 2]})
    assert read_result(p) == {"x": [1, 2]} and [q.name for q in p.parent.iterdir()] == ["b.json"]
    for bad in ('{"x": ', "[1, 2]", "\x00\x01"):
        p.write_text(bad)
        assert read_result(p) is None


def test_period_one_keeps_the_signature_of_runs_from_before_periods():
    from backend.bench.policies import policy_signature

    assert policy_signature("flowcache:period=1") == policy_signature("flowcache")
    assert policy_signature("flowcache:period=2") != policy_signature("flowcache")
