"""The per-object binding diagnosis (`python -m backend.bench binding`): its outcome classes and tables."""

import pytest

from backend.bench.binding import OUTCOMES, extras, outcome, render, summarise
from backend.consistency import Detection
from backend.prompt import parse


def det(colour, shape, x=10.0):
    return Detection(colour, shape, x, 10.0, 40)


def test_each_outcome_is_told_apart():
    fixed = {"red"}
    assert outcome([det("red", "circle")], "red", "circle", fixed, "red") == "right"
    assert outcome([det("red", "square")], "red", "circle", fixed, "red") == "wrong shape"
    assert outcome([det("blue", "circle")], "red", "circle", fixed, "red") == "wrong colour"
    assert outcome([det("red", None)], "red", "circle", fixed, "red") == "partial"
    assert outcome([det("green", "square")], "red", "circle", fixed, "red") == "missing"
    # an open colour: any colour the prompt does not name is right; a named one is not
    assert outcome([det("cyan", "square")], None, "square", fixed, "cyan") == "right"
    assert outcome([det("red", "square")], None, "square", fixed, "cyan") == "wrong colour"


def test_extras_count_sprites_beyond_the_prompts_count():
    spec = parse("a red circle and a blue square on plain green")
    dets = [det("red", "circle"), det("blue", "square"), det("red", "circle", 40.0), det("yellow", None)]
    assert extras(dets, spec) == 2 and extras(dets[:1], spec) == 0


def test_the_table_gives_shares_per_source_and_window():
    counts = {o: 0 for o in OUTCOMES}
    res = {
        s: {
            "objects": {
                "frame 0|0|fixed": counts | {"right": 3, "missing": 1},
                "frames 32-35|0|open": counts | {"wrong shape": 2},
            },
            "extra": [1] * 36,
        }
        for s in ("autoencoder", "generated")
    }
    summary = summarise([res])
    assert summary["table"]["generated|frame 0"]["right"] == 3 and summary["extra"]["generated"]["frame 0"] == 1
    text = render(summary, 1, 36)
    assert "| generated | frame 0 | 4 | 0.75 | 0.00 | 0.00 | 0.00 | 0.25 | 1.00 |" in text
    assert "| autoencoder | frames 32-35 · colour open | 2 | 0.00 | 1.00 |" in text


def test_the_cli_refuses_a_window_it_cannot_fill(capsys):
    from backend.bench.__main__ import main

    with pytest.raises(SystemExit):
        main(["binding", "--frames", "20"])
    assert "at least 36" in capsys.readouterr().err


def test_paired_differences_are_taken_pair_by_pair():
    from backend.bench.binding import paired

    counts = {o: 0 for o in OUTCOMES}

    def doc(right):
        res = [
            {"generated": {"objects": {"frame 0|0|fixed": counts | {"right": r, "missing": 4 - r}}, "extra": [r] * 36}}
            for r in right
        ]
        return {"pairs": [["p", i] for i in range(len(right))], "results": res}

    text = paired(doc([1, 2, 3]), doc([2, 3, 4]))  # every pair one more object right, one more extra sprite
    assert "| frame 0 | +0.250 ± 0.000 ▲ (n=3) | +1.000 ± 0.000 ▲ (n=3) |" in text
    with pytest.raises(ValueError, match="same pairs"):
        paired(doc([1, 2]), doc([1, 2, 3]))


def test_the_shape_probe_writes_a_confusion_matrix_per_source(tmp_path):
    import json

    from backend.bench.binding import shape_probe

    text = shape_probe(prompts=2, frames=2, out=str(tmp_path))
    doc = json.loads((tmp_path / "shape_probe.json").read_text())
    assert doc["pairs"] >= 1 and "**generated**" in text and (tmp_path / "shape_probe.md").is_file()
    for src in ("autoencoder", "generated"):
        m = doc[src]
        assert len(m) == 3 and all(len(r) == 3 for r in m) and sum(map(sum, m)) > 0


def test_the_signal_is_zero_for_a_model_blind_to_the_prompt_and_positive_otherwise():
    import torch

    from backend.bench.shape_signal import LEVELS, other_shape, pair_signal
    from backend.loading import load_autoencoder, random_model

    spec = parse("a red circle and a blue square on plain green")
    assert other_shape(spec) == "triangle"
    ae, model = load_autoencoder(), random_model("tiny")
    seen = pair_signal(model, ae, spec, seed=3)
    share = seen.pop("share")  # the autoencoder's: a square and a triangle differ by part of the sprite's energy
    assert 0 < share < 1
    assert set(seen) == set(LEVELS) and all(s > 0 for s, _, _ in seen.values())
    with torch.no_grad():
        model.prompt_emb.weight.zero_()  # every prompt embeds alike: the shape word cannot matter
    blind = pair_signal(model, ae, spec, seed=3)
    assert blind.pop("share") == share
    assert all(s == 0 and right == swapped for s, right, swapped in blind.values())


def test_the_signal_cli_takes_no_sampler_settings(capsys):
    from backend.bench.__main__ import main

    with pytest.raises(SystemExit):
        main(["binding", "--signal", "--frames", "4"])
    assert "--signal reads frame 0" in capsys.readouterr().err


def test_the_signal_table_splits_by_object_count(tmp_path, monkeypatch):
    from backend.bench import shape_signal
    from backend.loading import random_model

    monkeypatch.setattr("backend.loading.load_model", lambda path: random_model("tiny"))
    text = shape_signal.run("some.safetensors", prompts=6, out=str(tmp_path))
    doc = __import__("json").loads((tmp_path / "shape_signal.json").read_text())[0]
    assert doc["pairs"] == sum(v["pairs"] for v in doc["by_objects"].values()) > 0
    assert "| some.safetensors | 1 |" in text or "| some.safetensors | 2 |" in text
    share = doc["shape_share"]
    assert 0 < share["pairs"] <= doc["pairs"] and 0 < share["mean"] < 1 and f"{share['mean']:.3f}" in text
