"""The programs the peer contenders run, each its own process (``python -m bench.contenders.apps.X``)."""
