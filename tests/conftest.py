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
