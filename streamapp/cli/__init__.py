"""The ``streamapp`` command line: dev services, worker, schemas, dead letters, archive, replay, traffic."""

from __future__ import annotations

import click

from streamapp.cli import archive, detections, dev, dlq, kafka, replay, schema, traffic, worker

__all__ = ["main"]


@click.group()
def main() -> None:
    """streamapp: real-time detection on Apache Kafka."""


for _command in (
    kafka.kafka, dev.registry, dev.s3, dev.postgres, dev.influx, dev.prometheus,
    schema.schema, schema.avro, dlq.dlq, archive.archive, archive.batch, detections.detections,
    worker.worker, traffic.generate, traffic.demo, replay.replay,
):  # fmt: skip
    main.add_command(_command)
