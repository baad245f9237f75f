"""The app factory: ``create_app(settings)`` wires the Faust topology around the engine.

Topology::

    journey.clickstream ─┐  intake               ┌─> journey.dead-letter
    journey.research ────┼─> router ─────────────┤
    journey.support ─────┘  (aiokafka getmany)   └─> {app_id}-events-by-customer
                                                       │ (bundles, by customer)  ^
                                                       v                         │
                                customer-state   <── engine ──> journey.stage-changes,
                                dedupe-chunks    <──┤  │        triggers, erasures,
                                event-order      <──┤  │        identities, dead-letter
                                customer-aliases <──┘  └─> merge / forward / alias
                                                           forgets (the second hop)

The router reads the inputs through a plain aiokafka loop (processor/app/intake.py,
which says why); the engine is a Faust agent with concurrency 1 (faust-streaming#606
loses messages above that) and at-least-once processing (exactly_once duplicates output,
faust-streaming#517 and #323). Outputs are sent with ``force=True``: Faust would
otherwise hold them until the next commit, adding seconds of latency; the
commit still waits for the producer to flush, which is what at-least-once needs.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import faust
from faust.types import TP

from processor import __version__
from processor.api import access_middleware, register_routes
from processor.api.access import MAX_REQUEST_BYTES
from processor.app.compaction import INTERVAL as COMPACT_INTERVAL
from processor.app.compaction import Compactor
from processor.app.consumers import Consumers
from processor.app.erasure import ErasureRouter
from processor.app.failstop import Deliveries, FailStop, guard_commits
from processor.app.inflight import Finished, FreezeWatch
from processor.app.inflight import install as install_finished
from processor.app.intake import Intake
from processor.app.metrics import Metrics
from processor.app.operations import Operations
from processor.app.ordering import (
    MarkBroadcaster,
    PartitionOrder,
    RouterClock,
    input_partitions,
    order_version,
    ordering_config,
)
from processor.app.outbox import Outbox
from processor.app.partitioning import default_partitioner
from processor.app.pipeline import Applier, InputRecord, Router
from processor.app.preflight import BrokerFacts, consistency_check
from processor.app.redelivery import (
    deliver_every_record,
    guard_committed_heads,
    guard_uncommitted_heads,
)
from processor.app.tables import monotonic_table
from processor.app.timers import TimerIndex
from processor.app.watchdog import Watchdog
from processor.contracts.bundle import encode_ordered_bundle
from processor.contracts.limits import Limits
from processor.contracts.state import state_version
from processor.engine import JourneyModel, load_model
from processor.kafka_security import security_kwargs
from processor.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class JourneyApp:
    """A configured Faust app and the parts of it that tests, the CLI and the API need."""

    settings: Settings
    model: JourneyModel
    faust: faust.App
    router: Router
    applier: Applier
    metrics: Metrics
    states: Any
    chunks: Any
    operations: Operations
    failstop: FailStop
    deliveries: Deliveries
    compactor: Compactor | None = None
    aliases: Any = None
    fence: Callable[[], None] | None = None
    """The zombie check the worker runs before every send and commit (processor/app/fence.py)."""


def broker_credentials(settings: Settings) -> faust.SASLCredentials | faust.SSLCredentials | None:
    """Faust's form of the ``JOURNEY_KAFKA_*`` settings (the same ones every other client uses)."""
    kwargs = security_kwargs(settings)
    context = kwargs.get("ssl_context")
    if "sasl_mechanism" in kwargs:
        return faust.SASLCredentials(
            username=kwargs["sasl_plain_username"],
            password=kwargs["sasl_plain_password"],
            ssl_context=context,
            mechanism=kwargs["sasl_mechanism"],
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def web_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """HTTPS on the web port when a certificate and key are set."""
    cert, key = settings.web_tls_cert_file, settings.web_tls_key_file
    if cert is None:
        return None
    if key is None:
        raise SystemExit("JOURNEY_WEB_TLS_CERT_FILE needs JOURNEY_WEB_TLS_KEY_FILE")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    return context


def faust_options(settings: Settings, facts: BrokerFacts | None = None) -> dict[str, Any]:
    """Faust settings from ours; ``env={}`` keeps BROKER_URL, APP_STORE and WEB_PORT out.

    Faust's own web views (``/router``, ``/table``, statistics, graph) are off:
    they would serve table data to anyone who reaches the port.
    """
    facts = facts if facts is not None else BrokerFacts.unknown(settings)
    return {
        "env": {},
        "broker_credentials": broker_credentials(settings),
        "web_ssl_context": web_ssl_context(settings),
        "canonical_url": f"{settings.web_scheme}://{settings.web_host}:{settings.web_port}",
        "web_router_enabled": False,
        "web_tables_enabled": False,
        "web_stats_enabled": False,
        "web_graph_enabled": False,
        "web_metrics_enabled": False,
        "web_application_options": {
            "client_max_size": MAX_REQUEST_BYTES,
            "middlewares": [access_middleware(settings)],
        },
        "version": 1,
        "autodiscover": False,
        "broker": settings.broker_url,
        "store": settings.store_url,
        "datadir": str(settings.data_dir),
        "web_port": settings.web_port,
        "web_bind": settings.web_bind,
        "web_host": settings.web_host,
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication_factor,
        "broker_session_timeout": settings.session_timeout,
        "broker_heartbeat_interval": max(settings.session_timeout / 5, 0.5),
        "broker_rebalance_timeout": max(settings.session_timeout * 3, 30.0),
        "consumer_auto_offset_reset": "earliest",
        "processing_guarantee": "at_least_once",
        "producer_acks": -1,
        "producer_partitioner": default_partitioner,  # murmur2, remembered per key
        "table_standby_replicas": 0,
        "recovery_consistency_check": consistency_check(settings, facts),
        # Room for the largest record we send plus its key, headers and framing.
        "producer_max_request_size": facts.max_message_bytes + 64 * 1024,
        "stream_wait_empty": True,
    }


def create_app(
    settings: Settings, model: JourneyModel | None = None, facts: BrokerFacts | None = None
) -> JourneyApp:
    """Build the Faust app for ``settings``; loads (and validates) the journey definition.

    ``facts`` are what :func:`processor.app.preflight.preflight` learnt of the
    broker; without them the consistency check stays on and our own size limit holds.
    """
    model = model if model is not None else load_model(settings.definition)
    facts = facts if facts is not None else BrokerFacts.unknown(settings)
    limits = Limits(settings.max_event_bytes, settings.max_id_length, facts.max_message_bytes)
    app = faust.App(settings.app_id, **faust_options(settings, facts))
    metrics = Metrics()
    failstop = FailStop()
    deliveries = Deliveries(failstop)
    outbox = Outbox(
        lambda: cast(Any, app.producer)._ensure_producer(), deliveries.track, failstop.fail
    )
    deliveries.flush = outbox.flush  # a settle (before any commit) hands over the outbox first
    for topic in settings.source_topics:  # exposed at 0 before the first late event
        metrics.late_events.labels(topic)

    raw: dict[str, Any] = {
        "key_type": bytes,
        "value_type": bytes,
        "key_serializer": "raw",
        "value_serializer": "raw",
    }
    events = app.topic(settings.events_topic, partitions=settings.partitions, internal=True, **raw)
    stage_changes = app.topic(settings.stage_changes_topic, **raw)
    triggers = app.topic(settings.triggers_topic, **raw)
    dead_letters = app.topic(settings.dead_letter_topic, **raw)
    erasure_requests = app.topic(settings.erasure_requests_topic, **raw)
    erasures = app.topic(settings.erasures_topic, **raw)
    identities = app.topic(settings.identities_topic, **raw)

    states = monotonic_table(
        app,
        "customer-state",
        version=state_version,
        partitions=settings.partitions,
        help="Per-customer stage state (processor.contracts.state)",
        outbox=outbox,
    )
    chunks = monotonic_table(
        app,
        "dedupe-chunks",
        version=lambda _: 0,  # a sealed chunk is written once and never changes
        partitions=settings.partitions,
        help="Sealed chunks of applied event ids, per customer",
        outbox=outbox,
    )
    aliases = monotonic_table(
        app,
        "customer-aliases",
        version=lambda _: 0,  # written once per link; a forget tombstones it
        partitions=settings.partitions,
        help="Anonymous id -> its customer, on the anonymous id's partition (app/identity.py)",
        outbox=outbox,
    )
    order = monotonic_table(
        app,
        "event-order",
        version=order_version,
        partitions=settings.partitions,
        help="Per partition: event-time clock, watermarks and held events (app/ordering.py)",
        outbox=outbox,
    )
    config = ordering_config(settings)
    router_clock = RouterClock(config, settings.idle_timeout)
    intake = Intake(
        settings,
        lambda records: router.route(records),
        deliveries,
        failstop,
        commit_interval=float(app.conf.broker_commit_interval),
    )
    consumers = Consumers(lambda: app.consumer, intake, settings.source_topics)

    def committed_offset(partition: int) -> int | None:
        """The internal partition's committed offset: every message below it was processed."""
        offsets = getattr(app.consumer, "_committed_offset", {})
        value = offsets.get(TP(settings.events_topic, partition))
        return None if value is None else int(value)

    ordering = PartitionOrder(
        order,
        config,
        input_partitions(app, settings, intake),
        metrics,
        settle=deliveries.settle,
        committed=committed_offset,
    )

    def sender(topic: Any) -> Any:
        """Into the outbox (app/outbox.py): a record batch per partition, not a send per record.

        ``Topic.send`` would add a FutureMessage, its callbacks and sensors per
        record, and aiokafka's ``send`` a future per record, for nothing we use.
        Every record of ours goes this one way, so a partition's records keep
        their order whatever path wrote them.
        """
        return outbox.sender(topic.get_topic_name())

    router = Router(
        model=model,
        sources=settings.source_topics,
        partitions=settings.partitions,
        send_bundle=sender(events),
        send_dead_letter=sender(dead_letters),
        metrics=metrics,
        limits=limits,
        clock=router_clock,
    )
    timers = TimerIndex(max_clock_skew=settings.max_clock_skew)
    compactor = Compactor(by_customer=(states, chunks, aliases), whole=(order,))
    operations = Operations(
        app,
        settings,
        model,
        metrics,
        states,
        (states, chunks, aliases, order),
        timers=timers,
        events=events,
        ordering=ordering,
        failstop=failstop,
        deliveries=deliveries,
        consumers=consumers,
        send_internal=lambda value, partition: outbox.send(
            settings.events_topic, None, value, partition
        ),
    )
    # The stall checks run from the start, table recovery included (app/watchdog.py).
    app.add_dependency(Watchdog(operations.check_progress, failstop))
    applier = Applier(
        model=model,
        states=states,
        chunks=chunks,
        send_change=sender(stage_changes),
        send_trigger=sender(triggers),
        send_dead_letter=sender(dead_letters),
        timers=timers,
        ce_source=f"/journey-processor/{settings.app_id}",
        metrics=metrics,
        ordering=ordering,
        on_state_written=operations.state_written,
        on_tick_applied=operations.tick_applied,
        send_erased=sender(erasures),
        on_state_deleted=operations.state_deleted,
        on_erased=compactor.erased,
        settle=deliveries.settle,
        aliases=aliases,
        send_internal=sender(events),
        send_identity=sender(identities),
        partitions=settings.partitions,
    )
    erasure_router = ErasureRouter(
        partitions=settings.partitions,
        send_forget=sender(events),
        metrics=metrics,
        dead_letters=router,
        limits=limits,
    )

    async def send_marks(value: bytes, partition: int) -> None:
        # Behind the bundles already routed to the partition, as the outbox keeps order.
        await outbox.send(settings.events_topic, None, value, partition)

    MarkBroadcaster(
        app,
        settings,
        router_clock,
        send_marks,
        lambda marks: encode_ordered_bundle([], marks),
        consumers,
    ).install()
    cast(Any, app)._extra_services.append(
        intake
    )  # started after table recovery, stopped with the app

    # The router reads the inputs with a plain getmany loop (processor/app/intake.py).
    # An agent that raises would have its batch acked and skipped, and be
    # restarted (faust-streaming#315, #527): the engine agent stops the worker instead,
    # and so does the erasure router (erasure requests are few: a Faust agent is enough).
    # Faust acks records no agent processed (skipped during a rebalance or a stop,
    # or interrupted): only what a body below finished may be committed. And it
    # delivers records twice after a rebalance: a body runs once per record.
    freezes = FreezeWatch(settings.session_timeout)
    finished = Finished(freezes)
    finished.on_freeze += [states.distrust, chunks.distrust, order.distrust]

    def stop_if_frozen() -> bool:
        if finished.frozen():
            failstop.fail("stopped longer than the session: expelled, its partitions moved on")
            return True
        return False

    async def check_freeze() -> None:
        stop_if_frozen()  # also when no record comes

    def fence_check() -> None:
        if finished.frozen():  # what the producer held from before the freeze stays unsent
            failstop.stop_now("stopped longer than the session: expelled, sending nothing more")

    app.timer(interval=0.5)(check_freeze)

    @app.agent(erasure_requests, name="erasure-router", concurrency=1)
    async def route_erasures(stream: Any) -> None:
        async for batch in stream.take_events(settings.batch_max, within=settings.batch_window):
            fresh = [e for e in batch if not finished.again(e.message)]
            if not fresh:
                continue  # the whole batch was delivered twice since the last rebalance
            with finished.guard(e.message for e in fresh):
                try:
                    await erasure_router.route(_position(e.message, e.value) for e in fresh)
                except Exception as exc:
                    failstop.fail(f"the erasure router failed: {exc!r}", exc)
                    await failstop.halt()

    @app.agent(events, name="engine", concurrency=1)
    async def run_engine(stream: Any) -> None:
        async for event in stream.events():
            if finished.again(event.message):
                continue  # delivered twice since the last rebalance; done already
            if stop_if_frozen():
                await failstop.halt()  # applies nothing more; the process exits
            if finished.deferred(event.message):
                continue  # its tables are not recovered yet: it comes again after the seek
            with finished.guard((event.message,)):
                try:
                    await applier.apply_bundle(event.value, _position(event.message, None))
                except Exception as exc:
                    failstop.fail(f"the engine failed: {exc!r}", exc)
                    await failstop.halt()

    async def compact_erased() -> None:
        """Erased customers' bytes leave the local store files (processor/app/compaction.py)."""
        try:
            await compactor.tick()
        except Exception as exc:  # our storage failed: stop, as for any store failure
            failstop.fail(f"compacting after an erasure failed: {exc!r}", exc)

    async def compact_before_shutdown(sender: Any, **_: Any) -> None:
        compactor.run()
        compactor.hold()

    app.timer(interval=COMPACT_INTERVAL)(compact_erased)
    cast(Any, app.on_before_shutdown).connect(compact_before_shutdown)

    guard_commits(app.consumer, deliveries)
    deliver_every_record(app.consumer)
    guard_uncommitted_heads(app.consumer)
    guard_committed_heads(app.consumer)
    install_finished(app, finished, {settings.erasure_requests_topic, settings.events_topic})

    log.info(
        "journey-processor %s: model %s v%s, %d partitions",
        __version__,
        model.name,
        model.version,
        settings.partitions,
    )
    operations.install()
    journey = JourneyApp(
        settings,
        model,
        app,
        router,
        applier,
        metrics,
        states,
        chunks,
        operations,
        failstop,
        deliveries,
        compactor,
        aliases,
        fence_check,
    )
    register_routes(journey)
    return journey


def _position(message: Any, value: bytes | None) -> InputRecord:
    return InputRecord(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=value,
        timestamp=message.timestamp,
    )
