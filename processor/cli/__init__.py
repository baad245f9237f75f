"""The ``journey`` command: a thin layer over the settings, the app factory and the broker."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from processor import __version__
from processor.engine import DefinitionError, load_model
from processor.kafka_security import KafkaConnectError, KafkaSettingsError, check_connection
from processor.settings import Settings, add_settings_arguments

HELP = """\
journey-processor: a live, per-customer picture of the buying process.

Reads clickstream, research and support events from Kafka, keeps each
customer's stage in changelog-backed Faust tables, and publishes stage changes.
Every setting is a JOURNEY_* environment variable and a --option (see a
command's --help); the option wins.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="journey", description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"journey-processor {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        add_settings_arguments(sub)
        return sub

    command("worker", "Run one processor worker; start several for one consumer group.")
    broker = command("broker", "Run the embedded Kafka-protocol broker (Tansu, in memory).")
    broker.add_argument("--port", type=int, default=9092, help="port on 127.0.0.1 [9092]")
    produce = command("produce", "Send a JSON-lines file of events to the input topics.")
    produce.add_argument(
        "file",
        type=Path,
        help="one event object per line; the topic comes "
        "from a 'source' field or from the event type",
    )
    forget = command(
        "forget",
        "Ask the workers to forget customers (GDPR erasure): one request per id on the "
        "erasure-requests topic; each is confirmed on the erasures topic once its data is deleted.",
    )
    forget.add_argument("customer_ids", nargs="+", metavar="ID", help="customer id(s) to forget")
    forget.add_argument(
        "--request-id",
        default=None,
        help="name of the request, echoed in the confirmation (one ID only); default: a new UUID",
    )
    tail = command(
        "tail",
        "Print stage changes (or dead letters, triggers, erasures, identities) as they arrive.",
    )
    which = tail.add_mutually_exclusive_group()
    which.add_argument("--dead-letter", action="store_true", help="tail the dead-letter topic")
    which.add_argument("--triggers", action="store_true", help="tail the triggers topic")
    which.add_argument(
        "--erasures", action="store_true", help="tail the erasure confirmations topic"
    )
    which.add_argument(
        "--identities", action="store_true", help="tail the identity_merged records topic"
    )
    tail.add_argument("--from-beginning", action="store_true", help="start at the oldest record")
    tail.add_argument("--limit", type=int, default=None, help="stop after this many records")
    demo = command(
        "demo", "Start a broker and a worker, play a synthetic population, show the live funnel."
    )
    demo.add_argument("--customers", type=int, default=3000, help="population size [3000]")
    demo.add_argument("--seed", type=int, default=7, help="random seed [7]")
    demo.add_argument("--rate", type=float, default=2000.0, help="events per second to play [2000]")
    demo.add_argument(
        "--no-live",
        action="store_true",
        help="print progress lines instead of redrawing the screen",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings.from_env().with_args(args)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command != "worker":
        logging.getLogger("aiokafka").setLevel(logging.WARNING)
    try:
        if args.command == "worker":
            return run_worker(settings)
        if args.command == "broker":
            return run_broker(args.port)
        if args.command == "forget" and args.request_id is not None and len(args.customer_ids) > 1:
            print("journey forget: --request-id names one request: give one ID", file=sys.stderr)
            return 2
        if args.command in ("produce", "tail", "forget"):
            asyncio.run(check_connection(settings, wait_seconds=10.0))
        if args.command == "produce":
            from processor.cli.io import produce_file

            return produce_file(args.file, settings, load_model(settings.definition), sys.stdout)
        if args.command == "forget":
            from processor.cli.io import forget_customers

            return forget_customers(args.customer_ids, args.request_id, settings, sys.stdout)
        if args.command == "tail":
            from processor.cli.io import tail

            topic = (
                settings.dead_letter_topic
                if args.dead_letter
                else settings.triggers_topic
                if args.triggers
                else settings.erasures_topic
                if args.erasures
                else settings.identities_topic
                if args.identities
                else settings.stage_changes_topic
            )
            asyncio.run(tail(topic, settings, sys.stdout, args.from_beginning, args.limit))
            return 0
        if args.command == "demo":
            from processor.demo.run import run_demo

            return run_demo(settings, args)
    except DefinitionError as exc:
        print(f"journey: invalid journey definition: {exc}", file=sys.stderr)
        return 2
    except (KafkaConnectError, KafkaSettingsError) as exc:
        print(f"journey: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    raise AssertionError(f"unhandled command {args.command}")


YOUNG_GENERATION = 50_000
"""Allocations between two young collections of the worker's garbage collector (CPython: 700)."""


def tune_garbage_collector() -> None:
    """Freeze what startup built and collect young objects less often: for the worker.

    The worker allocates a few hundred objects per event (decoded events, states,
    records) and keeps almost none, so with CPython's default of a young collection
    every 700 allocations it ran about 1,100 collections per 100,000 events, about
    0.7 s of a 6-8 s run (measured with ``gc.callbacks`` in the benchmark's worker):
    a tenth of its CPU, mostly spent walking survivors that never die (Faust's and
    aiokafka's objects, the model, the metrics). ``gc.freeze`` moves everything
    built so far out of the collector's sight, and a young generation of 50,000
    makes the collections rarer: about 170 per 100,000 events, 0.11-0.16 s.
    Reference counting still frees almost everything at once; only cycles wait
    longer, and 50,000 young objects are a few megabytes at most.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION, middle, old)


def run_worker(settings: Settings) -> int:
    """Validate, wait for the broker and create missing topics, then hand over to Faust.

    Exits 69 (EX_UNAVAILABLE) with one line when no broker answers in time.
    """
    import faust

    from processor.app import create_app, fence
    from processor.app.preflight import BrokerUnavailable, preflight

    model = load_model(settings.definition)  # an invalid definition fails before any waiting
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        facts, created = asyncio.run(preflight(settings))
    except BrokerUnavailable as exc:
        print(f"journey worker: {exc}", file=sys.stderr)
        return 69
    log = logging.getLogger("journey")
    if created:
        log.info("created topics %s", created)
    journey = create_app(settings, model, facts)
    if journey.fence is not None:  # a zombie sends and commits nothing (processor/app/fence.py)
        fence.install(journey.fence)
    worker = faust.Worker(journey.faust, loglevel=settings.log_level, quiet=True)
    tune_garbage_collector()
    try:
        worker.execute_from_commandline()  # returns only by raising SystemExit
    finally:
        if journey.compactor is not None:
            journey.compactor.close_and_reopen()  # a fresh MANIFEST without erased keys
    return 0


def run_broker(port: int) -> int:
    from processor.broker import broker_command

    command = broker_command("127.0.0.1", port)
    print(
        f"journey broker: Tansu on 127.0.0.1:{port} (in memory; Ctrl-C stops it)", file=sys.stderr
    )
    os.execv(command[0], command)
