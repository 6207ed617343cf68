"""Factored object tokens (`ModelConfig.prompt_factors`): shared colour and shape embeddings on top of the joint
per-(slot, colour, shape) ones, and a continuation from joint-only weights that starts where they were."""

import torch

from backend.config import MODEL_PRESETS
from backend.models.dit import VideoDiT
from backend.prompt import COLOURS, SHAPES, object_factors, parse


def test_object_factors_decode_every_object_slot():
    colour, shape = object_factors()
    spec = parse("a red square and a circle and a blue triangle on yellow stripes behind a wall")
    toks = spec.tokens()
    got = [(colour[t], shape[t]) for t in toks[:3]]
    assert got == [(COLOURS.index("red"), 1), (len(COLOURS), 0), (COLOURS.index("blue"), 2)]
    # the other slots are not objects: the padding rows, which stay zero
    assert all(colour[t] == len(COLOURS) + 1 and shape[t] == len(SHAPES) + 1 for t in toks[3:])


def test_a_shape_embedding_is_shared_by_every_colour_and_slot(tmp_path):
    model = VideoDiT(MODEL_PRESETS["factored"])
    a = torch.tensor(parse("a red square and a blue circle on plain green").tokens())
    b = torch.tensor(parse("a yellow circle and a green square on plain green").tokens())
    before = [model.embed_prompt(t) for t in (a, b)]
    with torch.no_grad():
        model.shape_emb.weight[SHAPES.index("square")] += 1.0
    after = [model.embed_prompt(t) for t in (a, b)]
    moved = [(x - y).abs().sum(-1) > 0 for x, y in zip(after, before)]
    # the square's slot moved in both prompts (slot 0 in one, slot 1 in the other), nothing else did
    assert moved[0].tolist() == [True] + [False] * 6 and moved[1].tolist() == [False, True] + [False] * 5


def test_a_factored_model_continues_joint_weights_exactly(tmp_path):
    from backend import checkpoint
    from backend.loading import random_model
    from backend.train.video import init_from

    joint = random_model("default")
    path = tmp_path / "joint.safetensors"
    checkpoint.save(path, joint, joint.cfg, {})
    factored = VideoDiT(MODEL_PRESETS["factored"])
    init_from(factored, path)
    tokens = torch.tensor([parse("a red square and a circle on blue stripes").tokens()])
    x, t = torch.randn(1, 2, 8, 8, 8), torch.full((1, 2), 0.5)
    with torch.no_grad():
        assert torch.equal(factored.eval().bidirectional(tokens, x, t), joint.bidirectional(tokens, x, t))
