"""KEY=VALUE settings as the command line, the explorer and the benchmark specs write them."""

from __future__ import annotations


def parse_params(text: str | None) -> dict:
    """'alpha=0.5, storage=int4' -> {'alpha': 0.5, 'storage': 'int4'} (ints, floats, booleans, strings)."""
    out = {}
    for item in (text or "").replace(";", ",").split(","):
        item = item.strip()
        if not item:
            continue
        if "=" not in item:
            raise ValueError(f"policy parameters are KEY=VALUE pairs separated by commas; got {item!r}")
        k, v = (s.strip() for s in item.split("=", 1))
        if not k.isidentifier():
            raise ValueError(f"bad policy parameter name {k!r}")
        out[k] = _value(v)
    return out


def _value(v: str):
    if v.lower() in ("true", "false"):
        return v.lower() == "true"
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v
