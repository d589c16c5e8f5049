"""Faust tables (RocksDB via rocksdict, changelog-backed): one module per table."""

__all__: list[str] = []
