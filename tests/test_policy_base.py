import pytest
import torch

from backend.policies import make_policy, select


def test_select_keeps_protected_and_top_scores_with_newer_on_ties():
    scores = torch.tensor([5.0, 1.0, 3.0, 3.0, 0.0, 9.0])
    prot = torch.tensor([True, False, False, False, False, False])
    assert select(scores, prot, 3).tolist() == [0, 3, 5]           # 3.0 tie: index 3 is newer than 2
    assert select(scores, prot, 1).tolist() == [0]
    with pytest.raises(ValueError, match="protected"):
        select(scores, torch.ones(6, dtype=torch.bool), 3)


def test_registry_rejects_unknown_names_and_bad_windows():
    with pytest.raises(KeyError, match="known"):
        make_policy("nope")
    with pytest.raises(ValueError):
        make_policy("window", frames=0)
