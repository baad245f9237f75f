"""The Quix Streams peer: this project's engine in a Quix Streams app (benchmark only).

Run as ``python -m bench.quix_app`` with the ``JOURNEY_*`` variables a worker
gets (broker, input topic names, app id as the consumer group, data dir as the
state dir, stage-changes topic) plus ``BENCH_EXPECT``. Needs the ``bench``
extra (``pip install -e '.[bench]'``).

The pipeline is what a user would write in Quix Streams to run the same engine:

* the three input topics, each decoded as the worker's router does
  (``processor.contracts.limits.decode_record``: the size limits, then
  ``processor.contracts.inputs.decode_event`` for its own source), concatenated;
  rejected records are dropped (the processor dead-letters them: a few per
  thousand, so the cost difference is small);
* ``group_by`` customer_id through Quix's repartition topic, each event encoded
  with this project's bundle codec (a bundle of one event);
* a stateful ``apply``: the customer's state from Quix's RocksDB store
  (``encode_state``/``decode_state`` of ``processor.contracts.state``, stored as a
  base64 string because Quix JSON-serialises state values and the codec is
  binary), ``processor.engine.apply``, the new state and any sealed dedupe
  chunk written back (each write also goes to Quix's changelog topic);
* stage changes encoded with ``encode_stage_change`` to the stage-changes topic.

At-least-once (Quix's default), no transactions (the embedded broker has none).
The app stamps the wall-clock time of its first decoded record and of the
``BENCH_EXPECT``-th on stdout, like ``bench.noop_app``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from base64 import b64decode, b64encode
from typing import Any

from quixstreams import Application, State
from quixstreams.models.serializers import (
    Deserializer,
    SerializationContext,
    Serializer,
)

from bench.harness.config import COMMIT_INTERVAL, FIRST_STAMP, LAST_STAMP
from processor.contracts.bundle import decode_bundle, encode_bundle
from processor.contracts.inputs import Rejection
from processor.contracts.limits import Limits, decode_record
from processor.contracts.outputs import encode_stage_change
from processor.contracts.state import decode_state, encode_chunk, encode_state
from processor.engine import ChunkSealed, Event, StageChange, apply, load_model
from processor.settings import Settings

GROUP_BY = "by-customer"
"""The group_by operation's name: part of the repartition topic's name."""


class EventSerializer(Serializer):
    """An engine event as a one-event bundle (the processor's internal-topic codec)."""

    def __call__(self, value: Event, ctx: SerializationContext) -> bytes:
        return encode_bundle([value])


class EventDeserializer(Deserializer):
    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]

    def __call__(self, value: bytes, ctx: SerializationContext) -> Event:
        return decode_bundle(value)[0]


def build(settings: Settings, expect: int) -> Application:
    """The Quix app over the settings' input topics; consumer group = ``settings.app_id``."""
    model = load_model(settings.definition)
    limits = Limits(settings.max_event_bytes, settings.max_id_length)
    app = Application(
        broker_address=settings.broker_url.removeprefix("kafka://"),
        consumer_group=settings.app_id,
        auto_offset_reset="earliest",
        state_dir=str(settings.data_dir / "quix-state"),
        use_changelog_topics=True,
        processing_guarantee="at-least-once",
        # Faust's commit interval (Quix's default is 5 s): the same commit uncertainty.
        commit_interval=COMMIT_INTERVAL,
        loglevel=settings.log_level.upper(),  # type: ignore[arg-type]
        consumer_extra_config={
            "session.timeout.ms": int(settings.session_timeout * 1000),
            "heartbeat.interval.ms": int(settings.session_timeout * 200),
        },
    )
    seen = 0

    def stamp() -> None:
        nonlocal seen
        seen += 1
        if seen == 1:
            print(f"{FIRST_STAMP} {time.time():.6f}", flush=True)
        if seen == expect:
            print(f"{LAST_STAMP} {time.time():.6f} {seen}", flush=True)

    branches = []
    for topic_name, source in settings.source_topics.items():
        topic = app.topic(topic_name, key_deserializer="bytes", value_deserializer="bytes")

        def decode(
            raw: bytes | None,
            key: bytes | None,
            timestamp: int,
            headers: Any,
            source: Any = source,
            name: str = topic_name,
        ) -> Any:
            stamp()
            return decode_record(key, raw, source, name, limits)

        branch = (
            app.dataframe(topic)
            .apply(decode, metadata=True)
            .filter(lambda e: not isinstance(e, Rejection))
        )
        branches.append(branch)
    sdf = branches[0]
    for branch in branches[1:]:
        sdf = sdf.concat(branch)
    sdf = sdf.group_by(
        lambda event: event.customer_id,
        name=GROUP_BY,
        key_serializer="str",
        key_deserializer="str",
        value_serializer=EventSerializer(),
        value_deserializer=EventDeserializer(),
    )

    source_name = f"/journey-processor/{settings.app_id}"

    def step(event: Event, state: State[str, str]) -> list[bytes]:
        raw = state.get("s")
        before = None if raw is None else decode_state(b64decode(raw))
        result = apply(before, event, model)
        if result.state is not None and result.state is not before:
            state.set("s", b64encode(encode_state(result.state)).decode())
        changes = []
        for output in result.outputs:
            if isinstance(output, StageChange):
                changes.append(encode_stage_change(output, source_name).value)
            elif isinstance(output, ChunkSealed):
                state.set(f"c{output.index}", b64encode(encode_chunk(output.event_ids)).decode())
        return changes

    out = app.topic(settings.stage_changes_topic, value_serializer="bytes", key_serializer="str")
    sdf.apply(step, stateful=True, expand=True).to_topic(out)
    return app


def main() -> None:
    settings = Settings.from_env()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    expect = int(os.environ.get("BENCH_EXPECT", "0"))
    logging.basicConfig(level=logging.INFO)
    build(settings, expect).run()


if __name__ == "__main__":
    main()
    sys.exit(0)
