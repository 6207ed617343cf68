"""`full`: never evict (the reference every other policy is compared against)."""

from __future__ import annotations

from dataclasses import dataclass

from .scorer import Scorer


@dataclass
class Full(Scorer):
    name = "full"
