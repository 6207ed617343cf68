"""The shipped weights load and generate (so CI exercises the real model, not only random ones)."""

import numpy as np

from backend.consistency import contrast
from backend.loading import DEFAULT_AE, DEFAULT_MODEL, load_autoencoder, load_model
from backend.policies import make_policy
from backend.stepper import Stepper


def test_shipped_weights_generate_a_few_frames():
    assert DEFAULT_MODEL.is_file() and DEFAULT_AE.is_file()
    total = DEFAULT_MODEL.stat().st_size + DEFAULT_AE.stat().st_size
    assert total < 40e6
    model, ae = load_model(), load_autoencoder()
    st = Stepper(
        model, ae, "a red circle and a blue square on green stripes", 4, seed=0, policy=make_policy("window", frames=2)
    )
    recs = list(st.run())
    assert st.done and recs[-1].phase == "evict"
    c = contrast(st.frames)
    assert (c > 5).all() and (c < 120).all()  # a picture, not a flat or saturated frame
    assert not np.array_equal(st.frames[0], st.frames[3])
