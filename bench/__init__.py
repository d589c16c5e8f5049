"""Benchmarks of streamapp's login pipeline against its peers (see bench/README.md)."""
