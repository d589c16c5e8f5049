"""Detection rules as pure state transitions: (state, event) -> (new state, alert or None)."""

__all__: list[str] = []
