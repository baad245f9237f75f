"""Throughput benchmark of journey-processor against its peers and floors; prints figures.

``python -m bench.run [--events N] [--customers C]``. One run, one embedded
broker (Tansu, on a free loopback port), one set of pre-produced input records
read by every consumer in its own consumer group. The rows live in
``bench.rows`` (one module each), the shared harness in ``bench.harness``:

1. the pure engine in-process (no broker), split into its hot-path parts, and the
   shell in-process (router and applier on dict tables, ``bench.rows.shell``);
2. baseline A: a plain aiokafka consumer decoding every value with orjson;
3. baseline B: a no-op Faust agent (``bench.noop_app``) with the processor's Faust settings;
4. the Quix Streams peer (``--no-quix-row`` skips it; needs the ``bench`` extra):
   this project's engine in a Quix Streams app (``bench.quix_app``);
5. the processor end to end: a real ``python -m processor worker``, then
   (``--no-workers-row`` skips it) two such workers in one consumer group;
6. baseline C (``--no-table-baseline`` skips it): a Faust agent that writes a
   table once per event, the floor of the design the processor's bundles avoid.

Machines are noisy, so every figure is also given as a ratio to row A (and to
row B) of the same run. See ``bench/README.md`` for what each row means.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from bench.harness.config import COMMIT_INTERVAL, PARTITIONS, POLL, SESSION_TIMEOUT
from bench.harness.logs import log_summary
from bench.harness.offsets import Offsets
from bench.harness.population import create_topics, population, produce
from bench.harness.processes import indented_tail, interrupt_on_sigterm, stop_children
from bench.harness.results import Row, ratio, table
from bench.rows import event_time, quix
from bench.rows.engine import digest, engine_only
from bench.rows.faust_agents import baseline_faust
from bench.rows.plain_consumer import baseline_aiokafka
from bench.rows.processor import processor_end_to_end
from bench.rows.shell import shell_in_process
from bench.rows.two_workers import TwoWorkers, processor_two_workers
from processor.broker import EmbeddedBroker, free_port
from processor.contracts.limits import Limits
from processor.engine import load_model
from processor.processes import Child
from processor.settings import Settings


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="input records [200000]")
    parser.add_argument(
        "--customers", type=int, default=None, help="population size [sized for --events]"
    )
    parser.add_argument("--seed", type=int, default=11, help="population seed [11]")
    parser.add_argument(
        "--malformed", type=int, default=None, help="undecodable records [events/1000]"
    )
    parser.add_argument(
        "--timeout", type=float, default=240.0, help="seconds each consumer may take [240]"
    )
    parser.add_argument(
        "--batch-window",
        type=float,
        default=None,
        help="the processor's JOURNEY_BATCH_WINDOW [its default]",
    )
    parser.add_argument(
        "--batch-max", type=int, default=None, help="the processor's JOURNEY_BATCH_MAX [default]"
    )
    parser.add_argument(
        "--no-table-baseline",
        action="store_true",
        help="skip row C (a Faust agent writing a table once per event)",
    )
    parser.add_argument(
        "--workers-row",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the processor row again with 2 workers in one group [on]",
    )
    parser.add_argument(
        "--quix-row",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the Quix Streams peer (needs pip install -e '.[bench]') [on]",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="only the engine, A, B, Quix and one processor worker (the CI smoke)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, data)")
    args = parser.parse_args(argv)
    if args.quick:
        args.workers_row = False
        args.no_table_baseline = True
    return args


async def run(args: argparse.Namespace, broker: EmbeddedBroker, work: Path) -> Child | None:
    """Everything after the broker started; returns the processor worker (for its log)."""
    malformed = args.malformed if args.malformed is not None else args.events // 1000
    t = time.perf_counter()
    records = population(args.events, args.customers, args.seed, malformed)
    n = len(records)
    tag = f"b{os.getpid()}"
    base = Settings(
        broker_url=broker.url,
        partitions=PARTITIONS,
        clickstream_topic=f"{tag}.clickstream",
        research_topic=f"{tag}.research",
        support_topic=f"{tag}.support",
        stage_changes_topic=f"{tag}.stage-changes",
        dead_letter_topic=f"{tag}.dead-letter",
        session_timeout=SESSION_TIMEOUT,
        web_bind="127.0.0.1",
        log_level="info",
    )
    topics = {source: topic for topic, source in base.source_topics.items()}
    quix_output = f"{tag}.quix-stage-changes"  # created here: Quix would make it 1 partition
    print(
        f"population: {n:,} records ({malformed} malformed), "
        f"generated in {time.perf_counter() - t:.1f} s; {os.cpu_count()} CPUs; "
        f"load average {os.getloadavg()[0]:.2f}; Tansu at {broker.bootstrap}; work dir {work}",
        flush=True,
    )

    model = load_model(base.definition)
    print("1. engine in-process ...", flush=True)
    limits = Limits(base.max_event_bytes, base.max_id_length)
    engine = engine_only(records, topics, model, limits)
    shell = await shell_in_process(records)

    await create_topics(
        broker.bootstrap,
        [*base.source_topics, base.stage_changes_topic, base.dead_letter_topic, quix_output],
    )
    produce_s, input_ends, positions = await produce(broker.bootstrap, records, topics)
    ordered = event_time.reference(
        records, positions, topics, model, limits, timedelta(seconds=base.allowed_lateness)
    )
    print(f"   produced {n:,} records in {produce_s:.1f} s ({n / produce_s:,.0f}/s)", flush=True)

    print("2. aiokafka consumer ...", flush=True)
    inputs = list(base.source_topics)
    plain = await baseline_aiokafka(broker.bootstrap, inputs, f"{tag}-aiokafka", n, args.timeout)

    def own(name: str, store: str) -> Settings:
        return replace(
            base,
            app_id=f"{tag}-{name}",
            data_dir=work / f"data-{name}",
            web_port=free_port(),
            store_url=store,
            batch_max=args.batch_max or base.batch_max,
            batch_window=args.batch_window or base.batch_window,
        )

    async with Offsets(broker.bootstrap, input_ends) as offsets:
        print("3. no-op Faust agent ...", flush=True)
        noop, _ = await baseline_faust(
            offsets, own("noop", "memory://"), n, work, args.timeout, name="B Faust no-op agent"
        )
        rows = [*engine.rows, shell, plain, noop]
        peer: quix.QuixFigures | None = None
        if args.quix_row:
            print("3b. Quix Streams app running this engine ...", flush=True)
            peer = await quix.quix_row(
                offsets,
                replace(own("quix", "rocksdb://"), stage_changes_topic=quix_output),
                n,
                work,
                args.timeout,
            )
            rows.append(peer.row)
        print("4. processor worker ...", flush=True)
        processor, figures, worker = await processor_end_to_end(
            offsets, own("processor", "rocksdb://"), n, work, args.timeout
        )
        rows.append(processor)
        unheld: Row | None = None
        unheld_figures = None
        if not args.quick:
            print("4a. processor worker, holding off (JOURNEY_MAX_HELD_EVENTS=0) ...", flush=True)
            unheld, unheld_figures, _ = await processor_end_to_end(
                offsets,
                replace(own("unheld", "rocksdb://"), max_held_events=0),
                n,
                work,
                args.timeout,
                name="processor, holding off",
            )
            rows.append(unheld)
        two: TwoWorkers | None = None
        if args.workers_row:
            print("4b. processor, 2 workers in one group ...", flush=True)
            two = await processor_two_workers(
                offsets,
                own("processor2", "rocksdb://"),
                n,
                work,
                args.timeout,
                broker.process.pid if broker.process is not None else None,
                engine.applied,
            )
            rows.append(two.row)
        floor: Child | None = None
        if not args.no_table_baseline:
            print("5. Faust table write per event ...", flush=True)
            per_event, floor = await baseline_faust(
                offsets,
                own("per-event", "rocksdb://"),
                n,
                work,
                args.timeout,
                name="C Faust table write per event",
                value_bytes=round(engine.state_bytes),
            )
            rows.append(per_event)

    print()
    print(f"{engine.customers:,} customers; every row reads the same {n:,} records")
    print(table(rows, plain, noop))
    if peer is not None:
        print(peer_comparison(processor, unheld, peer.row))
    if processor.seconds is None:
        print(f"processor worker did not finish; its log ({worker.log_path}) ends:")
        print(indented_tail(worker))
    if two is not None and two.row.seconds is None:
        for child in two.children:
            print(f"{child.name} did not finish; its log ({child.log_path}) ends:")
            print(indented_tail(child))
    print()
    print(
        f"engine parts: state encode {engine.state_encode_us:.1f} us/write, decode "
        f"{engine.state_decode_us:.1f} us/read ({engine.state_bytes:,.0f} B/state); bundle "
        f"encode+decode {engine.bundle_us_per_event:.1f} us/event; stage-change encode "
        f"{engine.change_encode_us:.1f} us/change"
    )
    per = 1 / n
    print(
        f"processor outputs: {figures.stage_changes:,} stage changes "
        f"({figures.stage_changes * per:.3f}/event; in-process engine: "
        f"{engine.stage_changes:,}), {figures.dead_letters:,} dead letters (in-process "
        f"rejections: {engine.rejected:,}), {figures.bundles:,} bundles "
        f"({n / max(figures.bundles, 1):.0f} records/bundle)"
    )
    print(
        f"changelog records: customer-state {figures.state_changelog:,} "
        f"({figures.state_changelog * per:.3f}/event), dedupe-chunks "
        f"{figures.chunk_changelog:,} ({figures.chunk_changelog * per:.3f}/event); "
        f"a write-per-event design writes 1.000/event"
    )
    if figures.cpu_to_last_output is not None:
        cpu = figures.cpu_to_last_output
        print(
            f"processor: worker CPU from Ready to its last output {cpu:.1f} s, "
            f"{cpu / n * 1e6:.0f} us/event (without the idle wait for the closing commit)"
        )
    if processor.work is not None:
        print(
            f"processor: every record that led to an output committed {processor.work:.1f} s "
            f"after Ready ({n / processor.work:,.0f} events/s, "
            f"{ratio(processor.work_rate, plain.rate if plain else None)} of A); the headline "
            "also waits for the watermark bundles that follow the work"
        )
    if figures.inputs_done is not None:
        print(
            f"processor: inputs committed to their ends (router done) {figures.inputs_done:.1f} s"
            " after Ready; progress:"
        )
    print("\n".join(f"    {line}" for line in figures.timeline))
    print(
        f"state per customer (each customer's last value in the customer-state changelog, "
        f"as encoded): {figures.final.size_summary()}"
    )
    final = figures.final.states
    check = event_time.compare(figures.changes, ordered)
    verdict = "equal" if check.exact else "DIFFERENT"
    print(
        f"event time: processor {len(figures.changes.chains):,} "
        f"customers with changes, {figures.changes.records - figures.changes.duplicates:,} "
        f"stage changes ({figures.changes.duplicates:,} re-emitted duplicates), final-state "
        f"digest {digest(final)}; in-process engine in event-time order "
        f"{ordered.stage_changes:,}, digest {digest(ordered.final)}"
    )
    print(
        f"   customers whose events all arrived within the lateness: {check.in_time:,}, "
        f"chains equal for {check.in_time_equal:,} ({verdict}); customers with an event "
        f"beyond the lateness in its partition, or a late change: {check.late:,}, "
        f"{check.late_equal:,} of them still equal"
    )
    if check.differing_in_time:
        print(f"   differing, no late change: {', '.join(check.differing_in_time[:10])}")
        first = check.differing_in_time[0]
        print(f"   {first}, processor: {figures.changes.chains.get(first)}")
        print(f"   {first}, reference: {ordered.chains.get(first)}")
    if unheld is not None and unheld_figures is not None:
        print(
            f"holding off (arrival order): {unheld_figures.stage_changes:,} stage changes, "
            f"digest {digest(unheld_figures.final.states)}"
        )
        if processor.rate and unheld.rate:
            print(
                f"cost of holding: {processor.rate:,.0f} events/s with event-time ordering vs "
                f"{unheld.rate:,.0f}/s with holding off: ratio {processor.rate / unheld.rate:.2f}"
            )
    applied = sum(state.applied_count for state in final.values())
    differ = [
        (state, other)
        for customer, state in engine.final.items()
        if (other := final.get(customer)) is None or other.stage != state.stage
    ]
    one_cycle = sum(1 for a, b in differ if b is not None and a.cycle == b.cycle == 1)
    print(
        f"check: events applied per the changelog's final states {applied:,} (in-process "
        f"{engine.applied:,}); customers {len(final):,} (in-process "
        f"{engine.customers:,}); final stage differs for {len(differ):,} customers, "
        f"{one_cycle} of them in cycle 1 on both sides (the engine promises order "
        "independence within a cycle only; the worker sees another arrival order)"
    )
    print(
        f"load average now {os.getloadavg()[0]:.2f} (1 min; above ~0.2 before the run or far "
        f"above 1 now means something else ran on this machine's {os.cpu_count()} CPUs)"
    )
    print(f"processor log: {log_summary(worker.log_path)}")
    if peer is not None and peer.child is not None:
        print(quix_lines(peer, engine.applied, engine.stage_changes, n))
    if floor is not None:
        print(f"write-per-event log: {log_summary(floor.log_path)}")
    if two is not None:
        print("processor, 2 workers in one group (same records, its own app id):")
        print("\n".join(f"    {line}" for line in two.lines))
        if two.timeline:
            print("    progress:")
            print("\n".join(f"    {line}" for line in two.timeline))
    print(
        "timing: every consumer row starts when its consumer has its partitions and starts "
        "fetching (A: first assignment; Faust rows: the '[^Worker]: Ready' log line, after "
        "group join and table recovery), so startup (its own column) is left out. 'seconds' "
        "ends for A at its last record, for the Faust rows when their committed offsets are "
        f"seen complete (polled every {POLL} s; for the processor the input topics and the "
        f"internal topic). Faust commits every {COMMIT_INTERVAL} s or 10,000 acks, so the "
        "true end lies in the commit bracket (between the last commit movement before "
        "completion and the completion). 'exact end' needs no commit: B and C stamp their "
        "N-th record themselves; for the processor it is the last growth of its changelogs "
        f"and outputs (polled every {POLL} s; not of the internal topic, whose watermark "
        "bundles never stop). The Quix row is timed the "
        "same way from its first decoded record (after join and recovery): committed offsets "
        "on the inputs and its repartition topic, exact end = last growth of its changelog "
        "and output topic."
    )
    return worker


def peer_comparison(processor: Row, unheld: Row | None, peer: Row) -> str:
    """The processor's rate over the Quix peer's, by each of the three ends a run has.

    The headline (everything committed) also waits for the processor's internal topic to
    be committed to its very end, and that topic carries watermark bundles that never stop:
    every 0.25 s while anything moves and for ``QUIET_AFTER`` (10 s) after, so that end
    trails the work by seconds. "Work committed" ends when every record that led to an
    output is committed, which is all the peer's own "committed" end means (its topics
    carry nothing else). The exact end (last output record) needs no commit at all.
    """

    def ratio_of(ours: float | None, theirs: float | None) -> str:
        return f"{ours / theirs:.2f}x" if ours and theirs else "-"

    lines = ["processor vs the Quix peer (events/s over events/s):"]
    for row in (processor, unheld):
        if row is None:
            continue
        lines.append(
            f"    {row.name}: headline {ratio_of(row.rate, peer.rate)}, work committed "
            f"{ratio_of(row.work_rate, peer.work_rate)}, exact end "
            f"{ratio_of(row.exact_rate, peer.exact_rate)}"
        )
    return "\n".join(lines)


def quix_lines(peer: quix.QuixFigures, applied: int, changes: int, n: int) -> str:
    """What the Quix peer wrote, and the same correctness check as the processor's."""
    final = peer.final.states
    quix_applied = sum(state.applied_count for state in final.values())
    log = peer.child.log_path if peer.child else None
    lines = [
        f"Quix Streams peer: {peer.repartitioned:,} records on its repartition topic, "
        f"{peer.changelog:,} changelog records ({peer.changelog / max(n, 1):.3f}/event), "
        f"{peer.stage_changes:,} stage changes (in-process {changes:,})",
        f"    state per customer in its changelog (JSON string of encode_state): "
        f"{peer.final.size_summary()}",
        f"    check: events applied per its changelog's final states {quix_applied:,} "
        f"(in-process {applied:,}); customers {len(final):,}",
    ]
    if log is not None:
        lines.append(f"    log: {log}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, interrupt_on_sigterm)
    work = Path(tempfile.mkdtemp(prefix="journey-bench-"))
    worker: Child | None = None
    try:
        with EmbeddedBroker(log_path=work / "tansu.log") as broker:
            try:
                worker = asyncio.run(run(args, broker, work))
            finally:
                stop_children()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        stop_children()
        if args.keep:
            print(f"kept {work}")
        else:
            for path in _data_dirs(work):
                shutil.rmtree(path, ignore_errors=True)
    if worker is not None:
        print(f"logs: {work}")
    return 0


def _data_dirs(work: Path) -> Iterator[Path]:
    yield from (p for p in work.iterdir() if p.is_dir() and p.name.startswith("data-"))


if __name__ == "__main__":
    sys.exit(main())
