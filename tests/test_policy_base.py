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


def test_top_newest_equals_a_stable_sort_with_ties_and_nan():
    """The O(n) selection keeps exactly what a stable descending sort of the newest-first order keeps."""
    import torch

    from backend.policies.base import top_newest
    g = torch.Generator().manual_seed(0)
    for trial in range(200):
        n = int(torch.randint(1, 60, (1,), generator=g))
        vals = torch.randint(0, 5, (n,), generator=g).float()          # many ties
        if trial % 7 == 0:
            vals[torch.randint(0, n, (2,), generator=g)] = float("nan")
        if trial % 5 == 0:
            vals[0] = float("-inf")
        idx = torch.randperm(3 * n, generator=g)[:n].sort().values    # ascending cache indices
        k = int(torch.randint(0, n + 2, (1,), generator=g))
        newest_first = idx.flip(0)
        ref = newest_first[torch.sort(vals.flip(0), descending=True, stable=True).indices[:k]]
        assert set(top_newest(vals, idx, k).tolist()) == set(ref.tolist()), (vals, k)
