"""Jars from Maven Central: the runtime dependencies of a bundled pom, copied once into one directory."""

from __future__ import annotations

import shutil
import subprocess
from importlib import resources
from pathlib import Path

from streamapp.dev.service import DevServiceError, Progress, silent

__all__ = ["fetch_jars"]


def fetch_jars(
    libs: Path,
    pom_resource: str,
    product: str,
    main_jar: str,
    error: type[DevServiceError],
    progress: Progress | None = None,
    announce: str = "",
    count_downloads: bool = False,
) -> Path:
    """Copy the runtime dependencies of ``streamapp/dev/<pom_resource>`` into ``libs`` unless done; ``libs``.

    ``main_jar`` (e.g. "kafka_2.13") must be among them; ``count_downloads`` says every tenth download.
    """
    done = libs / ".complete"
    if done.exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise error(f"mvn not found: install Maven (apt install maven) to fetch {product}")
    say = progress or silent
    say(announce)
    pom = libs.parent / "pom.xml"
    pom.parent.mkdir(parents=True, exist_ok=True)
    pom.write_text(resources.files("streamapp.dev").joinpath(pom_resource).read_text())
    staging = libs.with_name("libs.partial")
    shutil.rmtree(staging, ignore_errors=True)
    cmd = [
        mvn, "-B", "-f", str(pom), "dependency:copy-dependencies",
        "-DincludeScope=runtime", f"-DoutputDirectory={staging}",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL
    )
    assert proc.stdout is not None
    downloaded = 0
    tail: list[str] = []
    for line in proc.stdout:
        tail = (tail + [line.rstrip()])[-30:]
        if count_downloads and "Downloaded from" in line:
            downloaded += 1
            if downloaded % 10 == 0:
                say(f"  {downloaded} artifacts downloaded ...")
    if proc.wait() != 0:
        raise error(f"Maven could not fetch {product}:\n" + "\n".join(tail))
    jars = sorted(p.name for p in staging.glob("*.jar"))
    if not any(j.startswith(f"{main_jar}-") for j in jars):
        raise error(f"Maven finished but no {main_jar} jar is in {staging}")
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    done.write_text("\n".join(jars) + "\n")
    say(f"fetched {len(jars)} jars" + (f" ({downloaded} artifacts downloaded)" if count_downloads else ""))
    return libs
