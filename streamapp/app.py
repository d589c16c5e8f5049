"""The Faust application: one app id, RocksDB (rocksdict) state, settings from the environment."""

from __future__ import annotations

import importlib
import pkgutil
from functools import partial

import faust
from faust.types import TransportT
from faust.web.drivers.aiohttp import Web as AiohttpWeb

from streamapp.models import configure_limits
from streamapp.observability.logs import logging_config
from streamapp.runtime import heap, rocksdb_store
from streamapp.runtime.consumer import BatchConsumer
from streamapp.runtime.faust_compat import create_topic_of, replace_create_topic
from streamapp.runtime.kafka_clients import broker_credentials
from streamapp.runtime.producer import BatchSender
from streamapp.runtime.recovery import HealingTableManager
from streamapp.runtime.replication import replicated_topic_creator
from streamapp.runtime.router import Router
from streamapp.runtime.transactions import WorkerTransactionManager, worker_transactional_id
from streamapp.settings import Settings, load_settings
from streamapp.web.auth import web_middleware
from streamapp.web.peers import peer_key

__all__ = [
    "APP_MODULES",
    "StreamApp",
    "StreamAppWeb",
    "app",
    "create_app",
    "declare_routes",
    "import_app_modules",
    "settings",
]

#: packages whose modules register tables, agents, timers and views on import
APP_MODULES = [
    "tables",
    "agents",
    "streamapp.web.views",
    "streamapp.web.live",
    "streamapp.observability.monitoring",
]


class StreamAppWeb(AiohttpWeb):
    """faust's aiohttp web server without its placeholder index: `GET /` is the live page."""

    production_blueprints = []  # (prefix, blueprint) pairs faust mounts when not in debug mode


class StreamApp(faust.App):
    """The Faust app, serving the web API with :class:`StreamAppWeb`.

    Its consumer is a :class:`BatchConsumer`: the topics of :attr:`batch_router` (topic name ->
    batch handler, declared by :func:`declare_routes`) are processed a fetch at a time.
    """

    #: STREAMAPP_REPLICATION_FACTOR (None: min(3, brokers)); see streamapp.runtime.replication
    replication_factor: int | None = None

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        #: routed topic -> its batch handler (not faust's ``router``: that one routes web requests)
        self.batch_router = Router()
        self.batch_sender = BatchSender(self)

    async def on_started(self) -> None:
        await super().on_started()
        # tables recovered, agents and web server up: what exists now lives as long as the worker
        heap.settle()

    def _new_web(self) -> AiohttpWeb:
        return StreamAppWeb(self)

    def _new_transport(self) -> TransportT:
        transport = super()._new_transport()
        transport.Consumer = BatchConsumer  # type: ignore[misc]
        # every topic faust creates gets the replication the cluster allows, and min.insync.replicas
        replace_create_topic(
            transport, replicated_topic_creator(create_topic_of(transport), lambda: self.replication_factor)
        )
        return transport


def create_app(settings: Settings) -> StreamApp:
    """Build the Faust app for these settings (agents and tables register themselves on import)."""
    tabledir = settings.data_dir / "tables"
    rocksdb_store.register()
    faust_app = StreamApp(
        settings.app_id,
        broker=settings.broker,
        # TLS / SASL for every faust client: consumer, producer, admin, transactional producers
        broker_credentials=broker_credentials(settings),
        # faust's RocksDB store (rocksdict driver), see streamapp.runtime.rocksdb_store
        store=rocksdb_store.STORE_URL,
        datadir=str(settings.data_dir),
        tabledir=str(tabledir),
        web_port=settings.web_port,
        web_host=settings.web_host,
        web_bind="0.0.0.0" if settings.web_host != "127.0.0.1" else "127.0.0.1",
        canonical_url=f"http://{settings.web_host}:{settings.web_port}",
        topic_partitions=settings.partitions,
        # what faust asks for; the transport replaces it with the resolved factor
        # (streamapp.runtime.replication)
        topic_replication_factor=settings.replication_factor or 1,
        processing_guarantee=settings.processing_guarantee,
        consumer_auto_offset_reset="earliest",
        # scanned by `faust -A streamapp.app worker` and by `streamapp worker`
        autodiscover=APP_MODULES,
        origin="streamapp",
        # faust's debug pages are not part of the contract's web API
        web_graph_enabled=False,
        web_stats_enabled=False,
        web_metrics_enabled=False,
        web_tables_enabled=False,
        # STREAMAPP_WEB_TOKEN: a bearer token on every view but /health, /ready, /live, /metrics;
        # requests between workers are signed with the peer key instead, and forwarded once at most
        web_application_options={"middlewares": [web_middleware(settings.web_token, peer_key(settings))]},
        # a few ms of linger turn one produce request per record into one per batch
        producer_linger=0.005,
        # acknowledged only once every in-sync replica has the record (min.insync.replicas)
        producer_acks=-1,
        # batches of forwarded and changelog records are built whole (streamapp.runtime.producer): room for
        # a fetch's worth of them in one produce request per partition
        producer_max_batch_size=256 * 1024,
        # flow control (STREAMAPP_MAX_POLL_RECORDS, STREAMAPP_STREAM_BUFFER): records per fetch and
        # events buffered per agent; a full buffer pauses fetching from that partition (backpressure)
        broker_max_poll_records=settings.max_poll_records,
        stream_buffer_maxsize=settings.stream_buffer,
        producer_max_request_size=max(4 * settings.max_record_bytes, 1_048_576),
        table_standby_replicas=1,
        # local state ahead of its changelog is rebuilt, not fatal (faust's ConsistencyError)
        TableManager=HealingTableManager,
        # a crashed worker's partitions move to the others after this long (faust's default: 60 s)
        broker_session_timeout=10.0,
        broker_heartbeat_interval=2.0,
        # our handler and format (text or JSON lines) with the secret filter, on mode's root setup
        logging_config=logging_config(settings),
    )
    faust_app.replication_factor = settings.replication_factor
    return faust_app


def declare_routes(router: Router, app: faust.App, settings: Settings) -> None:
    """Which handler takes the fetched records of each topic: the app's pipeline, in one place.

    A login: `logins` -> agents.route_logins.ingest (streamapp.pipeline.ingest) -> the detections
    of `logins` (agents.run_detections: `<app>-detection-events`, keyed by detection and entity)
    -> streamapp.detections.engine and its operators (streamapp.rules) -> `alerts`
    (streamapp.pipeline.alerting). Runs at the first fetch (streamapp.runtime.router.Router), once
    every app module is imported.
    """
    # agents and topics import this module (the app they register with): imported here, not above
    from agents import (
        analyze_prices,
        route_logins,
        route_sensor_readings,
        route_stock_prices,
        route_transactions,
        route_users,
        run_detections,
    )
    from streamapp.models import decode_json_object
    from streamapp.pipeline.ingest import Ingest
    from streamapp.runtime import topics

    # (topic, the handler's factory, the agent that owns the handler): the factories get the settings
    routes = [
        # ingest: validate and re-key the input topics
        (topics.logins_topic, route_logins.ingest, route_logins.route_logins),
        (topics.sensor_readings_topic, route_sensor_readings.ingest,
         route_sensor_readings.route_sensor_readings),
        (topics.transactions_topic, route_transactions.ingest, route_transactions.route_transactions),
        (topics.stock_prices_topic, route_stock_prices.ingest, route_stock_prices.route_stock_prices),
        (topics.users_topic, route_users.ingest, route_users.route_users),
        # the stock prices' analytics per symbol
        (topics.prices_by_symbol_topic, analyze_prices.detector, analyze_prices.analyze_prices),
    ]  # fmt: skip
    for topic, make_handler, agent in routes:
        handler = make_handler(app, settings)
        if isinstance(handler, Ingest) and handler.decode is decode_json_object:
            # a JSON input topic's valid events go to the detection specs of that topic too
            handler.detections = run_detections.handoff
        router.declare(topic.get_topic_name(), handler, agent.name)
    # the detections of the control topic read their source topics beside the ingest
    for name in settings.detection_topics:
        router.declare(settings.topic(name), run_detections.route_batch, run_detections.route_detections.name)
    router.declare(
        run_detections.detection_events_topic.get_topic_name(),
        run_detections.apply_batch,
        run_detections.run_detections.name,
    )


def import_app_modules() -> None:
    """Import every app module now, so that a broken one stops the worker with its traceback.

    (faust's autodiscovery only logs a warning and starts without the agent.)
    """
    for name in APP_MODULES:
        package = importlib.import_module(name)
        for module in pkgutil.iter_modules(getattr(package, "__path__", [])):
            importlib.import_module(f"{name}.{module.name}")


def _use_worker_transactions(app: faust.App, settings: Settings) -> None:
    """Exactly-once needs one transaction per worker for a re-keyed pipeline (see transactions.py)."""
    if settings.processing_guarantee != "exactly_once":
        return
    manager = type(
        "StreamappTransactionManager",
        (WorkerTransactionManager,),
        {"transactional_id": worker_transactional_id(settings.app_id, str(settings.data_dir.resolve()))},
    )
    app.transport.TransactionManager = manager  # type: ignore[misc]


settings = load_settings()
configure_limits(settings)  # the parsers' bounds on hostile input (clock skew, amounts, prices)
app = create_app(settings)
_use_worker_transactions(app, settings)
app.batch_router.assemble_with(partial(declare_routes, app=app, settings=settings))
