"""``python -m bench.run --events N``: every contender on the same data, one after the other, one report."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import click

from bench.contenders import CONTENDERS, FULL_RULES, STREAMAPP_FULL_NAME
from bench.data import Dataset, login_events, produce
from bench.harness import Bench, guarded
from bench.kafka_util import Broker
from bench.procs import REPO
from bench.report import Report, machine_info
from bench.scenarios.archive import ArchiveOutcome, archive
from bench.scenarios.latency import LatencyOutcome, latency
from bench.scenarios.profile import ProfileOutcome, aggregate_folded, profile
from bench.scenarios.recovery import RecoveryOutcome, recovery
from bench.scenarios.throughput import throughput
from streamapp.dev.kafka import DevBroker, DevBrokerError, broker_answers

__all__ = ["main", "run"]

logger = logging.getLogger("bench")

#: generated output that is not the committed summary (bench/RESULTS.md): profiles, bench-small's run
RESULTS_DIR = REPO / "bench" / "results"


def _bootstrap() -> tuple[str, DevBroker | None]:
    """``STREAMAPP_TEST_BROKER`` when set, else the dev broker; the broker to stop after, if started here."""
    given = os.environ.get("STREAMAPP_TEST_BROKER")
    if given:
        bootstrap = given.split("://", 1)[-1]
        if not broker_answers(bootstrap, timeout=10):
            raise click.ClickException(f"STREAMAPP_TEST_BROKER={given} does not answer")
        return bootstrap, None
    broker = DevBroker()
    started_here = not broker.status().running
    try:
        status = broker.up(progress=logger.info)
    except DevBrokerError as exc:
        raise click.ClickException(str(exc)) from exc
    deadline = time.monotonic() + 90  # a broker that is (re)starting answers within seconds
    while not status.answers and time.monotonic() < deadline:
        time.sleep(1)
        status = broker.status()
    if not status.answers:
        raise click.ClickException(f"the dev broker does not answer: see {status.log_file}")
    return broker.bootstrap, broker if started_here else None


def profile_path(results: Path) -> Path:
    """Where a run's folded stacks go: bench/results/ for the committed summary, else beside ``results``."""
    if results.resolve() == (REPO / "bench" / "RESULTS.md").resolve():
        return RESULTS_DIR / "profile.folded"
    return results.with_name("profile.folded")


def run(
    events: int,
    recovery_keys: int,
    latency_seconds: float,
    with_profile: bool,
    with_archive: bool,
    contenders: list[str],
    rounds: int,
    results: Path,
    work: Path,
    timeout_scale: float,
    command: str,
) -> Report:
    """Produce the data once, measure everything, write ``results``; the report."""
    machine = machine_info()
    bootstrap, dev_broker = _bootstrap()
    tag = uuid.uuid4().hex[:6]
    broker = Broker(bootstrap)
    bench = Bench(tag=tag, broker=broker, work=work, timeout_scale=timeout_scale)
    prefix = bench.name("-")
    topic = f"{prefix}logins"
    started = time.monotonic()
    logger.info(
        "bench %s on %s: %s events, %s recovery keys; work dir %s",
        tag, bootstrap, f"{events:,}", f"{recovery_keys:,}", work,
    )  # fmt: skip
    try:
        broker.create_topic(topic, bench.partitions)
        data: Dataset = produce(bootstrap, topic, login_events(events), "data")
        report = Report(command, data.events, data.failures, data.ips, topic, machine, rounds=rounds)
        report.throughput, report.versus = throughput(bench, data, prefix, contenders, rounds)
        base = report.streamapp()
        base_rate = base.rate if base is not None and base.rate else None
        if with_archive:  # right after the worker's run, on the same records
            report.archive = guarded(
                "archiver to Parquet on S3Proxy",
                lambda: archive(bench, data, base_rate),
                lambda reason: ArchiveOutcome(status="failed", reason=reason, worker_rate=base_rate),
            )
        if latency_seconds > 0:
            rate = base_rate / 2 if base_rate else 1000.0
            report.latency = guarded(
                "event-to-alert latency",
                lambda: latency(bench, rate, latency_seconds),
                lambda reason: LatencyOutcome(status="failed", reason=reason, rate=rate),
            )
            full = next((o for o in report.throughput if o.name == STREAMAPP_FULL_NAME), None)
            if full is not None and full.rate:
                full_rate = full.rate / 2
                report.latency_full = guarded(
                    "event-to-alert latency, both login rules",
                    lambda: latency(bench, full_rate, latency_seconds, rules=FULL_RULES),
                    lambda reason: LatencyOutcome(status="failed", reason=reason, rate=full_rate),
                )
        if recovery_keys > 0:
            report.recovery = guarded(
                "changelog recovery and restart",
                lambda: recovery(bench, recovery_keys),
                lambda reason: RecoveryOutcome(status="failed", reason=reason, keys=recovery_keys),
            )
        if with_profile:
            seconds = min(120.0, max(3.0, 0.8 * events / base_rate)) if base_rate else 20.0
            report.profile = guarded(
                "profile (py-spy)",
                lambda: profile(bench, data, prefix, seconds),
                lambda reason: ProfileOutcome(status="failed", reason=reason),
            )
        machine.load_end = os.getloadavg()
        report.minutes = (time.monotonic() - started) / 60
        results.parent.mkdir(parents=True, exist_ok=True)
        results.write_text(report.markdown())
        if report.profile is not None and report.profile.folded is not None:
            aggregate_folded(report.profile.folded, profile_path(results))
        logger.info("results written to %s", results)
        return report
    finally:
        _clean_up(bench)
        if dev_broker is not None:  # started for this run: leave the machine as it was
            dev_broker.down(progress=logger.info)


def _clean_up(bench: Bench) -> None:
    """Delete this run's topics (all named ``bench<tag>...``) and its RocksDB directories; keep the logs."""
    try:
        mine = [t for t in bench.broker.topics() if f"bench{bench.tag}" in t]
        deleted = bench.broker.delete_topics(mine)
        logger.info("deleted %d topics of this run", deleted)
    except Exception as exc:
        logger.warning("could not delete this run's topics: %s", exc)
    finally:
        bench.broker.close()
    shutil.rmtree(bench.work / "data", ignore_errors=True)
    logger.info("logs of every process: %s", bench.work / "logs")


@click.command()
@click.option(
    "--events",
    "-n",
    type=click.IntRange(min=1000),
    default=200_000,
    show_default=True,
    help="Login events produced once and read by every contender.",
)
@click.option(
    "--recovery-keys",
    type=click.IntRange(min=0),
    default=1_000_000,
    show_default=True,
    help="Distinct IPs in the table rebuilt from its changelog (0: skip recovery).",
)
@click.option(
    "--latency-seconds",
    type=click.FloatRange(min=0),
    default=25.0,
    show_default=True,
    help="How long the latency run holds half of streamapp's rate (0: skip).",
)
@click.option(
    "--profile/--no-profile",
    "with_profile",
    default=True,
    show_default=True,
    help="A second streamapp pass under py-spy: top functions by own time.",
)
@click.option(
    "--archive/--no-archive",
    "with_archive",
    default=True,
    show_default=True,
    help="The archiver over the same data to Parquet on an S3Proxy of its own: records/s vs the worker's.",
)
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Throughput rounds (each contender once per round, in a rotating order); the median counts.",
)
@click.option(
    "--only",
    "only",
    multiple=True,
    type=click.Choice(list(CONTENDERS)),
    help="Run only these throughput contenders (repeatable; default: all).",
)
@click.option(
    "--results",
    type=click.Path(dir_okay=False, path_type=Path),
    default=REPO / "bench" / "RESULTS.md",
    show_default=True,
    help="Where the markdown report goes.",
)
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Logs and state of the contenders (default: a new directory under /tmp).",
)
@click.option(
    "--timeout-scale",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="Multiply every contender's time limit.",
)
@click.option(
    "--check",
    is_flag=True,
    help="Exit 1 unless every figure was produced (CI); the speed itself is never judged.",
)
def main(
    events: int,
    recovery_keys: int,
    latency_seconds: float,
    with_profile: bool,
    with_archive: bool,
    rounds: int,
    only: tuple[str, ...],
    results: Path,
    work_dir: Path | None,
    timeout_scale: float,
    check: bool,
) -> None:
    """Benchmark streamapp's login pipeline against idiomatic Faust, Quix Streams, raw aiokafka and Kafka."""
    work = work_dir or Path(tempfile.mkdtemp(prefix="streamapp-bench-"))
    (work / "logs").mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    file_log = logging.FileHandler(work / "logs" / "bench.log")
    file_log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(file_log)
    command = "python -m bench.run " + " ".join(sys.argv[1:])
    report = run(
        events, recovery_keys, latency_seconds, with_profile, with_archive, list(only or CONTENDERS), rounds,
        results, work, timeout_scale, command,
    )  # fmt: skip
    click.echo(report.text())
    if report.profile is not None and report.profile.top:
        click.echo("Where the time goes (py-spy, own time):")
        for name, own, _inc in report.profile.top:
            click.echo(f"  {100 * own / max(report.profile.samples, 1):5.1f}%  {name}")
    if check:
        gaps = report.missing()
        if gaps:
            for gap in gaps:
                logger.error("no figure: %s", gap)
            sys.exit(1)
        logger.info("check: every contender produced a number (speed is not judged)")


if __name__ == "__main__":
    main()
