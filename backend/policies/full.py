"""`full`: never evict (the reference every other policy is compared against)."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Policy


@dataclass
class Full(Policy):
    name = "full"
