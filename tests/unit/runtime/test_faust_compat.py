"""Every private faust / aiokafka attribute streamapp touches still exists in the installed versions."""

from __future__ import annotations

import pytest

from streamapp.runtime.faust_compat import PRIVATE, Private


@pytest.mark.parametrize("private", PRIVATE, ids=[f"{p.owner.rpartition(':')[2]}.{p.name}" for p in PRIVATE])
def test_the_private_attribute_is_still_there(private: Private) -> None:
    problem = private.problem()
    assert problem is None, problem


def test_a_renamed_attribute_fails_naming_it_and_the_dependency_version() -> None:
    gone = Private("faust.stores.rocksdb:Store", "_db_for_partition_renamed", "read a partition's RocksDB")
    problem = gone.problem() or ""
    assert "faust-streaming 0." in problem and "_db_for_partition_renamed" in problem
    assert "read a partition's RocksDB" in problem
    missing_class = Private("aiokafka.client:NoSuchClient", "_topics", "keep topics")
    assert (missing_class.problem() or "").startswith("aiokafka 0.")


def test_every_private_attribute_the_code_touches_is_listed() -> None:
    """A private attribute of a faust or aiokafka object used outside faust_compat must be listed."""
    import re
    from pathlib import Path

    listed = {p.name for p in PRIVATE}
    root = Path(__file__).resolve().parents[3]
    # objects of faust / aiokafka, by the names streamapp gives them
    pattern = re.compile(r"\b(?:consumer|client|producer|store|recovery|transport|monitor)\.(_[a-z][a-z_]*)")
    found: set[str] = set()
    for path in [*root.glob("streamapp/**/*.py"), *root.glob("tables/*.py"), *root.glob("agents/*.py")]:
        if path.name == "faust_compat.py" or "dev" in path.parts or path.name == "cli.py":
            continue
        found |= set(pattern.findall(path.read_text()))
    assert found <= listed, f"not in streamapp/runtime/faust_compat.py: {sorted(found - listed)}"
