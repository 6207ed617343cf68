"""Cache budgets: tokens, frame-equivalents, a share of the full cache, or bytes.

``parse_budget("2048")`` (tokens per layer), ``"8f"`` (frame-equivalents: 8 x tokens per frame, plus the
prompt anchors), ``"12.5%"`` (of the full cache at the requested length), ``"512KB"`` / ``"2MB"`` (KV bytes in
all layers together: prompt anchors and the newest chunk at fp32, older tokens at the policy's storage
dtype, with a quantisation group's shared scales spread over a frame's tokens). Anything else is rejected with a
clear message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

UNITS = {"b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30}
_RE = re.compile(r"^\s*(?P<num>\d+(?:\.\d+)?)\s*(?P<unit>f|%|b|kb|mb|gb)?\s*$", re.IGNORECASE)


class BudgetError(ValueError):
    """A budget that cannot be parsed or cannot hold the protected tokens."""


@dataclass(frozen=True)
class Budget:
    kind: str  # tokens | frames | share | bytes
    value: float

    def tokens(
        self,
        *,
        n_prompt: int,
        tokens_per_frame: int,
        n_frames: int,
        n_layer: int,
        bytes_per_token: float,
        fixed_tokens: int = 0,
        fixed_bytes_per_token: float | None = None,
    ) -> int:
        """Tokens per layer this budget allows. For a byte budget, `fixed_tokens` (prompt anchors and newest
        chunk, kept at full precision) take `fixed_bytes_per_token` each and the rest `bytes_per_token`."""
        if self.kind == "tokens":
            n = int(self.value)
        elif self.kind == "frames":
            n = n_prompt + int(round(self.value * tokens_per_frame))
        elif self.kind == "share":
            n = int(round(self.value / 100.0 * (n_prompt + n_frames * tokens_per_frame)))
        else:
            per_layer = self.value / n_layer
            fixed_cost = fixed_tokens * (fixed_bytes_per_token or bytes_per_token)
            if per_layer < fixed_cost:  # below the protected size: the policy rejects it
                n = int(per_layer // (fixed_bytes_per_token or bytes_per_token))
            else:
                n = fixed_tokens + int((per_layer - fixed_cost) // bytes_per_token)
        if n <= 0:
            raise BudgetError(f"budget {self} allows no tokens at all; give a positive budget")
        return n

    def __str__(self) -> str:
        v = f"{self.value:g}"
        return {"tokens": v, "frames": f"{v}f", "share": f"{v}%", "bytes": f"{v} bytes"}[self.kind]


def parse_budget(text: str | int) -> Budget:
    """Parse a budget string (see module docstring)."""
    if isinstance(text, bool):
        raise BudgetError(f"invalid budget {text!r}")
    if isinstance(text, int):
        text = str(text)
    m = _RE.match(str(text))
    if not m:
        raise BudgetError(
            f"invalid budget {text!r}: use tokens (2048), frames (8f), a share of the full cache "
            "(12.5%) or bytes (512KB, 2MB)"
        )
    num, unit = float(m["num"]), (m["unit"] or "").lower()
    if num <= 0:
        raise BudgetError(f"budget must be positive, got {text!r}")
    if unit == "":
        if num != int(num):
            raise BudgetError(f"a token budget must be a whole number, got {text!r}")
        return Budget("tokens", num)
    if unit == "f":
        return Budget("frames", num)
    if unit == "%":
        if num > 100:
            raise BudgetError(f"a share of the full cache must be at most 100%, got {text!r}")
        return Budget("share", num)
    return Budget("bytes", num * UNITS[unit])
