"""Faust agents: one module per agent."""

__all__: list[str] = []
