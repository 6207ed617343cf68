import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.chdir(ROOT)
torch.set_num_threads(2)

from backend.autoencoder import AutoEncoder  # noqa: E402
from backend.loading import random_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny():
    return random_model("tiny", seed=0)


@pytest.fixture(scope="session")
def ae():
    torch.manual_seed(0)
    return AutoEncoder().eval()


@pytest.fixture(scope="session")
def readme_python():
    """The README's ```python blocks, in order (tests run them so that the README stays true)."""
    import re

    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


@pytest.fixture()
def models_folder(tmp_path):
    """A training run's models folder (`--models-dir`) holding a copy of the shipped student and, with
    `own_autoencoder=True`, its own autoencoder: the shipped one with its first decoder weight halved, so
    decoding with it visibly differs. -> (folder, that autoencoder or None)."""
    import shutil

    from backend import checkpoint
    from backend.loading import DEFAULT_AE, DEFAULT_MODEL, load_autoencoder

    def make(name: str = "run_models", own_autoencoder: bool = False):
        folder = tmp_path / name
        folder.mkdir()
        shutil.copy(DEFAULT_MODEL, folder / "student.safetensors")
        if not own_autoencoder:
            return folder, None
        ae = load_autoencoder(DEFAULT_AE)
        with torch.no_grad():
            next(ae.decoder.parameters()).mul_(0.5)
        checkpoint.save(folder / "autoencoder.safetensors", ae, ae.cfg, {"note": "the run's own"})
        return folder, ae

    return make
