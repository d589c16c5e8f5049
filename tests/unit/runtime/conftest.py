"""Fixtures of the runtime tests: a faust table on streamapp's RocksDB store, in a temporary directory."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faust
import pytest

from streamapp.runtime import rocksdb_store


@pytest.fixture
def make_table(tmp_path: Path) -> Callable[..., faust.Table]:
    """Makes a table "counts" of a fresh app (``options``: faust's Table options; default: int values;
    ``app_options``: more of faust's App options)."""

    def make(app_options: dict[str, Any] | None = None, **options: Any) -> faust.Table:
        rocksdb_store.register()
        app = faust.App(
            f"store-test-{uuid.uuid4().hex[:8]}",
            store=rocksdb_store.STORE_URL,
            datadir=str(tmp_path / "data"),
            tabledir=str(tmp_path / "tables"),
            **(app_options or {}),
        )
        table = app.Table("counts", **(options or {"default": int}))
        app.finalize()
        return table

    return make
