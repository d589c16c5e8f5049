"""The dev broker's Java version check, on fake `java` executables (no broker, no real JDK needed)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from streamapp.dev.kafka import DevBrokerError, java_major_version, new_cluster_id


def _fake_java(tmp_path: Path, first_line: str) -> str:
    """An executable that answers `-version` like a JDK does: on stderr."""
    java = tmp_path / "java"
    java.write_text(f"#!/bin/sh\necho '{first_line}' >&2\necho 'OpenJDK Runtime Environment' >&2\n")
    java.chmod(0o755)
    return str(java)


@pytest.mark.parametrize(
    ("first_line", "major"),
    [
        ('openjdk version "1.8.0_392"', 8),
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('openjdk version "11.0.2" 2019-01-15', 11),
        ('openjdk version "21-ea" 2023-09-19', 21),
    ],
)
def test_java_major_version_reads_old_and_new_schemes(tmp_path, first_line, major):
    assert java_major_version(_fake_java(tmp_path, first_line)) == major


def test_java_major_version_unreadable_output_is_a_clear_error(tmp_path):
    with pytest.raises(DevBrokerError, match="cannot read the Java version"):
        java_major_version(_fake_java(tmp_path, "something else entirely"))


def test_java_major_version_missing_java_says_what_to_install(tmp_path):
    with pytest.raises(DevBrokerError, match="Java 17"):
        java_major_version(str(tmp_path / "no-such-java"))


def test_cluster_ids_never_look_like_an_option() -> None:
    # one random UUID in 64 encodes to a leading "-", which the storage tool took for an option
    ids = [new_cluster_id() for _ in range(5000)]
    assert not [cluster_id for cluster_id in ids if cluster_id.startswith("-")]
    assert all(len(base64.urlsafe_b64decode(cluster_id + "==")) == 16 for cluster_id in ids)
    assert len(set(ids)) == len(ids)
