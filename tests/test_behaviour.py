"""The frames every registered policy draws with the shipped model are those recorded in the fixture.

The fixture (`python -m backend.bench behaviour --write tests/fixtures/behaviour.json`) holds a digest of every
frame of every policy at 1/8, 1/4 and its minimum budget on two prompts (32 frames): a refactor of the engine
that changes one pixel anywhere fails here, naming the run and the first frame that differs. An intended change
re-records the fixture in its own commit, with its measured effect. The suite re-draws every policy and budget on
the first prompt (the suite's time limit); `python -m backend.bench behaviour --check
tests/fixtures/behaviour.json` re-draws both prompts.
"""

import json

from backend.bench.behaviour import FIXTURE, differences, jobs, record_all, run_key


def test_fixture_covers_every_registered_policy():
    runs = json.loads(FIXTURE.read_text())["runs"]
    assert set(runs) == {run_key(*j) for j in jobs()}
    drawn = [r for r in runs.values() if "frames" in r]
    assert len(drawn) >= len(runs) - 8  # only budgets a policy cannot hold record an error


def test_every_policy_draws_the_recorded_frames():
    expected = json.loads(FIXTURE.read_text())["runs"]
    first = {run_key(*j) for j in jobs() if j[2] == 0}  # every policy and budget, the first prompt
    got = record_all(only=first, progress=False)
    assert len(got) == len(first) >= 30
    assert not differences(expected, got), "\n".join(differences(expected, got))
