"""Chunk-causal video generators behind one protocol (`protocol.CausalVideoModel`): the project's DiT."""

from .protocol import CausalVideoModel, Clock, Geometry

__all__ = ["CausalVideoModel", "Clock", "Geometry"]
