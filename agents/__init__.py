"""Faust agents: one module per agent, and the detector loop they share (base.py and its parts)."""

__all__: list[str] = []
