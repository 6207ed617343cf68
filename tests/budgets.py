"""What holding a budget means for a step record, shared by the policy matrix and the Wan tests."""


def within(r, budget: int) -> bool:
    """A keep holds its budget: tokens per layer, or for per-head policies (token, head) pairs per layer (the
    heads together hold at most the bytes of `budget` tokens held by all)."""
    if r.heads is None:
        return bool((r.occupancy <= budget).all())
    return bool((r.heads.sum(1) <= budget * r.heads.shape[1]).all() and (r.heads <= r.occupancy[:, None]).all())
