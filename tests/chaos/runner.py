"""One chaos run: broker, three workers, a seeded workload and fault schedule, then the checker.

Usable from pytest (:func:`run`) and from a terminal (``python -m tests.chaos``).

The run:

1. start an embedded broker (or use ``broker_url``) and create the input topics
   with their own partition counts (6, 3 and 2: keys and partition counts are
   not the processor's);
2. start three workers in one group, each with its own web port and data dir,
   and wait until all answer ``/readyz``;
3. produce the workload at a steady rate while the fault schedule runs; a
   worker that exits on its own is recorded and restarted (as an orchestrator
   would);
4. bring the group back to three workers and wait until it has quiesced: every
   worker ready, every input and internal record committed by the group, and
   the end offsets of all outputs and changelogs unchanged between two looks;
5. read every output and changelog topic from the beginning without a group,
   ask ``/customers/{id}`` for every customer, and run the checker.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from processor.app.intake import router_group
from processor.broker import EmbeddedBroker
from processor.engine import Source, load_model
from processor.settings import Settings
from tests.chaos import observe
from tests.chaos.checker import Observed, Order, Produced, Report, check
from tests.chaos.cluster import Cluster, Slot
from tests.chaos.coordinator import coordinator_loop
from tests.chaos.schedule import Fault, plan
from tests.chaos.workload import Planned, WorkloadShape, build
from tests.integration.conftest import API_TOKEN

INPUT_PARTITIONS: dict[Source, int] = {"clickstream": 6, "research": 3, "support": 2}

FROZEN = "stopped longer than the session"
"""What a worker says when it stops itself after being stopped past its session."""

DEAF_RECOVERY = "table recovery read nothing from"
"""What a worker says when Faust's table recovery received nothing for the stall timeout."""


@dataclass
class ChaosConfig:
    seed: int = 1
    duration: float = 60.0
    """Seconds during which new faults are started (the first five always run)."""
    shape: WorkloadShape = field(default_factory=WorkloadShape)
    produce_fraction: float = 0.6
    """Production is spread over this fraction of ``duration``."""
    order: Order = "partition"
    workers: int = 3
    partitions: int = 8
    session_timeout: float = 6.0
    gap: tuple[float, float] = (2.0, 6.0)
    settle_timeout: float = 180.0
    broker_safe: bool = False
    """Start each fault (and the scale step's last SIGTERM) on a settled group, and keep a
    killed worker down past its session: the faults the embedded broker's coordinator
    survives (tests/chaos/coordinator.py says which it does not). The short run in
    ``make test`` sets it; ``make chaos`` does not."""
    broker_url: str | None = None
    workdir: Path | None = None
    echo: bool = True


@dataclass
class RunResult:
    report: Report
    workdir: Path
    faults: list[str]
    coordinator_loop: str | None = None
    """The embedded broker's coordinator loop, if the run met it (tests/chaos/coordinator.py)."""


class _Log:
    def __init__(self, echo: bool) -> None:
        self.started = time.monotonic()
        self.echo = echo
        self.lines: list[str] = []

    def __call__(self, text: str) -> None:
        line = f"[{time.monotonic() - self.started:7.1f}s] {text}"
        self.lines.append(line)
        if self.echo:
            print(line, flush=True)


def chaos_settings(config: ChaosConfig, broker_url: str, workdir: Path) -> Settings:
    prefix = f"chaos{config.seed}-{int(time.time())}"
    token_file = workdir / "api-token"
    token_file.write_text(API_TOKEN + "\n")
    return Settings(
        api_token_file=token_file,
        broker_url=broker_url,
        app_id=f"{prefix}-app",
        partitions=config.partitions,
        clickstream_topic=f"{prefix}.clickstream",
        research_topic=f"{prefix}.research",
        support_topic=f"{prefix}.support",
        stage_changes_topic=f"{prefix}.stage-changes",
        dead_letter_topic=f"{prefix}.dead-letter",
        triggers_topic=f"{prefix}.triggers",
        erasure_requests_topic=f"{prefix}.erasure-requests",
        erasures_topic=f"{prefix}.erasures",
        identities_topic=f"{prefix}.identities",
        session_timeout=config.session_timeout,
        batch_window=0.02,
        # A stalled partition stops its worker sooner than the default 60 s, so the
        # short run settles within its time.
        stall_timeout=30.0,
    )


def run(config: ChaosConfig) -> RunResult:
    return asyncio.run(run_async(config))


async def run_async(config: ChaosConfig) -> RunResult:
    workdir = config.workdir or Path(tempfile.mkdtemp(prefix=f"chaos-{config.seed}-"))
    workdir.mkdir(parents=True, exist_ok=True)
    log = _Log(config.echo)
    log(f"chaos seed {config.seed}, duration {config.duration}s, workdir {workdir}")
    with contextlib.ExitStack() as stack:
        url = config.broker_url
        if url is None:
            broker = stack.enter_context(EmbeddedBroker(log_path=workdir / "tansu.log"))
            url = broker.url
        settings = chaos_settings(config, url, workdir)
        cluster = Cluster(settings, workdir)
        stack.callback(cluster.stop_all)
        return await _run(config, settings, cluster, workdir, log)
    raise AssertionError("unreachable")


async def _run(
    config: ChaosConfig, settings: Settings, cluster: Cluster, workdir: Path, log: _Log
) -> RunResult:
    model = load_model()
    planned = build(config.seed, config.shape)
    await _create_inputs(settings)
    log(f"workload: {len(planned)} records, {dict(Counter(p.kind for p in planned))}")

    names = iter(f"w{n}" for n in range(1, 1000))
    initial = [cluster.slot(next(names)) for _ in range(config.workers)]
    for slot in initial:
        slot.start()
    await cluster.wait_ready(initial, 120)
    log(f"{len(initial)} workers ready: {', '.join(s.name for s in initial)}")

    produced: list[Produced] = []
    producing = asyncio.create_task(
        _produce(settings, planned, config.duration * config.produce_fraction, produced)
    )
    faults_done: list[str] = []
    liveness: list[str] = []
    loops: list[str] = []
    """The broker's coordinator loops met during the schedule (reported, not enforced)."""
    started = time.monotonic()
    for n, fault in enumerate(
        plan(config.seed, session_timeout=config.session_timeout, gap=config.gap)
    ):
        if n >= 5 and time.monotonic() - started > config.duration:
            break
        await _gap(fault.gap, cluster, log)
        if config.broker_safe:
            await _settled(cluster, liveness, f"before {fault.kind}", log)
            if fault.kind in ("kill", "kill_wipe"):
                fault = replace(fault, hold=max(fault.hold, 1.5 * config.session_timeout))
        done = await _inject(fault, cluster, names, log, liveness, loops, config.broker_safe)
        faults_done.append(done)
    await producing
    log(f"produced {len(produced)} records; faults: {len(faults_done)}")

    # Back to the target size, replacing any worker that died on its own.
    for slot in cluster.reap():
        log(f"{slot.name} had exited on its own; restarting it")
        slot.start()
    while len(cluster.running()) < config.workers:
        slot = cluster.slot(next(names))
        slot.start()
        log(f"started {slot.name} to get back to {config.workers} workers")
    quiesced = await _settle(config, settings, cluster, log)
    if not quiesced[0]:
        liveness.append(quiesced[1])
    looping = _coordinator_loop(settings, cluster) or (loops[0] if loops else None)

    urls = [s.url for s in cluster.running()]
    observed = Observed(
        stage_changes=await observe.read_topic(settings, settings.stage_changes_topic),
        triggers=await observe.read_topic(settings, settings.triggers_topic),
        dead_letters=await observe.read_topic(settings, settings.dead_letter_topic),
        changelog=await observe.read_topic(settings, f"{settings.app_id}-customer-state-changelog"),
        api={},
        bundles=await observe.read_topic(settings, settings.events_topic),
    )
    customers = sorted({p.planned.customer_id for p in produced if p.planned.customer_id})
    observed.api = await observe.customers(urls, customers)
    pages = await observe.metrics_text(urls)
    processed = observe.events_total(pages)
    log(f"read back outputs, /customers and /metrics of {len(pages)} workers")
    _dump(workdir / "history", produced, observed, settings)
    for table in ("event-order", "dedupe-chunks"):  # not checked; for post-mortems
        records = await observe.read_topic(settings, f"{settings.app_id}-{table}-changelog")
        _dump_records(workdir / "history" / f"{table}-changelog.jsonl", records)
    for n, text in enumerate(pages.values()):
        (workdir / "history" / f"metrics-{n}.txt").write_text(text)

    report = check(produced, observed, settings, model, order=config.order)
    report.facts["faults injected"] = dict(Counter(f.split(" ")[0] for f in faults_done))
    report.facts["worker starts"] = sum(s.starts for s in cluster.slots.values())
    report.facts["journey_events_total of the final workers (since their last start)"] = {
        k: int(v) for k, v in sorted(processed.items())
    }
    exits = report.finding("liveness.no_unexpected_exits", "no worker exits without being told to")
    cluster.reap()
    # A worker stopped past its session stops itself when it wakes (fail-stop,
    # processor/app/inflight.py): the designed answer to this schedule's pause.
    paused = {done.split()[1] for done in faults_done if done.startswith("pause ")}
    woke: list[str] = []
    deaf = report.finding(
        "faust.recovery_stall",
        "a worker stopped itself (exit 70) because Faust's table recovery received nothing from "
        "a changelog partition for the stall timeout, and was restarted: the designed answer "
        "to a hang in Faust's or the broker's reading side, where none of our code runs",
        enforced=False,
    )
    for name, code, tail in cluster.unexpected_exits:
        if code == 70 and name in paused and FROZEN in tail:
            woke.append(name)
            continue
        if code == 70 and DEAF_RECOVERY in tail:
            said = next(line for line in tail.splitlines() if DEAF_RECOVERY in line)
            where = [line for line in tail.splitlines() if "recovery stalled:" in line]
            facts = where[0][where[0].index("recovery stalled:") :] if where else ""
            deaf.add(f"{name}: {said[said.index(DEAF_RECOVERY) :]} {facts}".strip())
            continue
        last = [line for line in tail.splitlines() if line.strip()][-3:]
        exits.add(f"{name} exited {code}: {' / '.join(last)}")
    report.facts["paused workers that stopped themselves on waking (exit 70)"] = woke
    alive = report.finding(
        "liveness.quiesced",
        "the group is ready and caught up after the schedule; rolling restarts come back ready",
    )
    for problem in liveness:
        alive.add(problem)
    loop = report.finding(
        "broker.coordinator_loop",
        "the embedded broker's group coordinator kept the group from forming (its bug, not "
        "ours: the liveness checks of such a run say nothing about the worker)",
        enforced=False,
    )
    for met in dict.fromkeys([*loops, *([looping] if looping else [])]):
        loop.add(met)
    return RunResult(report, workdir, faults_done, looping)


def _coordinator_loop(settings: Settings, cluster: Cluster) -> str | None:
    logs = [slot.log_path for slot in cluster.running()]
    return coordinator_loop(logs, [settings.app_id, router_group(settings)])


def _dump(
    directory: Path, produced: list[Produced], observed: Observed, settings: Settings
) -> None:
    """The whole history as JSON lines, for a post-mortem after the broker is gone.

    ``python -m tests.chaos.recheck`` runs the checker again on it.
    """
    directory.mkdir(exist_ok=True)
    (directory / "settings.json").write_bytes(
        orjson.dumps({k: str(v) for k, v in settings.environment({}).items()})
    )

    def raw(value: bytes | None) -> str | None:
        return None if value is None else base64.b64encode(value).decode()

    with (directory / "produced.jsonl").open("wb") as out:
        for p in produced:
            row = {
                "topic": p.topic,
                "partition": p.partition,
                "offset": p.offset,
                "timestamp": p.timestamp,
                "kind": p.planned.kind,
                "reason": p.planned.reason,
                "customer_id": p.planned.customer_id,
                "event_id": p.planned.event_id,
                "key": raw(p.planned.key),
                "value": raw(p.planned.value),
            }
            out.write(orjson.dumps(row) + b"\n")
    outputs = {
        "stage-changes": observed.stage_changes,
        "triggers": observed.triggers,
        "dead-letters": observed.dead_letters,
        "changelog": observed.changelog,
        "events-by-customer": observed.bundles,
    }
    for name, records in outputs.items():
        _dump_records(directory / f"{name}.jsonl", records)
    (directory / "api.json").write_bytes(orjson.dumps(observed.api))


def _dump_records(path: Path, records: list[observe.Out]) -> None:
    def raw(value: bytes | None) -> str | None:
        return None if value is None else base64.b64encode(value).decode()

    with path.open("wb") as out:
        for r in records:
            row: dict[str, int | str | None] = {
                "partition": r.partition,
                "offset": r.offset,
                "timestamp": r.timestamp,
            }
            row["key"] = raw(r.key)
            row["value"] = raw(r.value)
            out.write(orjson.dumps(row) + b"\n")


async def _create_inputs(settings: Settings) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        topics = {v: k for k, v in settings.source_topics.items()}
        await admin.create_topics(
            [NewTopic(topics[source], n, 1) for source, n in INPUT_PARTITIONS.items()]
        )
    finally:
        await admin.close()


async def _produce(
    settings: Settings, planned: list[Planned], seconds: float, out: list[Produced]
) -> None:
    """Send everything at a steady rate over ``seconds``; keep where each record landed."""
    topic_of = {source: topic for topic, source in settings.source_topics.items()}
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, acks="all", max_request_size=4 * 1024 * 1024
    )
    await producer.start()
    try:
        chunk = 100
        began = time.monotonic()
        rate = len(planned) / max(seconds, 1.0)
        futures = []
        for start in range(0, len(planned), chunk):
            for p in planned[start : start + chunk]:
                futures.append((p, await producer.send(topic_of[p.source], p.value, key=p.key)))
            ahead = (start + chunk) / rate - (time.monotonic() - began)
            if ahead > 0:
                await asyncio.sleep(ahead)
        await producer.flush()
        for p, future in futures:
            meta = await future
            out.append(Produced(p, meta.topic, meta.partition, meta.offset, meta.timestamp))
    finally:
        await producer.stop()


async def _gap(seconds: float, cluster: Cluster, log: _Log) -> None:
    """The schedule's pause between faults; restarts workers that died meanwhile."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        for slot in cluster.reap():
            log(f"!! {slot.name} exited on its own ({cluster.unexpected_exits[-1][1]}); restarting")
            slot.start()


def _target(cluster: Cluster, fault: Fault) -> Slot:
    running = sorted(cluster.running(), key=lambda s: s.name)
    return running[fault.pick % len(running)]


async def _settled(cluster: Cluster, liveness: list[str], when: str, log: _Log) -> None:
    """Wait until every worker is ready (its groups formed), restarting any that exited
    meanwhile (as an orchestrator would; a paused one stops itself on waking); note it if
    never."""
    deadline = time.monotonic() + 120
    while True:
        for slot in cluster.reap():
            log(f"!! {slot.name} exited on its own ({cluster.unexpected_exits[-1][1]}); restarting")
            slot.start()
        try:
            await cluster.wait_ready(cluster.running(), min(10.0, deadline - time.monotonic()))
            return
        except TimeoutError as exc:
            if time.monotonic() >= deadline:
                liveness.append(f"{when}: {exc}")
                return


async def _inject(
    fault: Fault,
    cluster: Cluster,
    names: Iterator[str],
    log: _Log,
    liveness: list[str],
    loops: list[str],
    broker_safe: bool = False,
) -> str:
    def new_name() -> str:
        return next(names)

    if not cluster.running():
        slot = cluster.slot(new_name())
        slot.start()
    slot = _target(cluster, fault)
    if fault.kind in ("kill", "kill_wipe"):
        slot.kill()
        await asyncio.sleep(fault.hold)
        if fault.kind == "kill_wipe":
            slot.wipe()
        slot.start()
        done = f"{fault.kind} {slot.name} (down {fault.hold}s)"
    elif fault.kind == "pause":
        slot.pause()
        await asyncio.sleep(fault.hold)
        slot.resume()
        done = f"pause {slot.name} ({fault.hold}s)"
    elif fault.kind == "scale":
        code = await asyncio.to_thread(slot.terminate)
        log(f"scale: SIGTERM {slot.name} (exit {code}) -> {len(cluster.running())} workers")
        await _gap(fault.hold, cluster, log)
        added = [cluster.slot(new_name()), cluster.slot(new_name())]
        for a in added:
            a.start()
        log(f"scale: started {added[0].name}, {added[1].name} -> {len(cluster.running())} workers")
        await _gap(fault.hold, cluster, log)
        if broker_safe:
            await _settled(cluster, liveness, "scale, before the last SIGTERM", log)
        victim = _target(cluster, replace(fault, pick=fault.pick + 1))
        code = await asyncio.to_thread(victim.terminate)
        done = (
            f"scale 3->2->4->3 (SIGTERM {slot.name}, +{added[0].name} +{added[1].name}, "
            f"SIGTERM {victim.name} exit {code})"
        )
    else:
        for each in sorted(cluster.running(), key=lambda s: s.name):
            code = await asyncio.to_thread(each.terminate)
            each.start()
            try:
                await cluster.wait_ready([each], 120)
            except TimeoutError as exc:
                # The broker's coordinator loop (its bug) keeps the restarted worker from
                # joining; it may be over by the end of the run, so look now.
                looping = _coordinator_loop(cluster.settings, cluster)
                if looping:
                    loops.append(f"rolling restart of {each.name}: {looping}")
                else:
                    liveness.append(f"rolling restart: {exc}")
            log(f"rolling: {each.name} SIGTERM (exit {code}), restarted, ready")
        done = "rolling SIGTERM restart of " + ", ".join(s.name for s in cluster.running())
    log(f"fault: {done}")
    return done


async def _settle(
    config: ChaosConfig, settings: Settings, cluster: Cluster, log: _Log
) -> tuple[bool, str]:
    """Wait until ready, caught up and stable; (False, why) after ``settle_timeout``."""
    deadline = time.monotonic() + config.settle_timeout
    # Not the events topic: every worker's router sends a watermark heartbeat to
    # each of its partitions every HEARTBEAT seconds (app/ordering.py), so its end
    # offsets never stand still; "group caught up" covers its records, as of the
    # previous poll (see observe.group_caught_up).
    outputs = [
        settings.stage_changes_topic,
        settings.triggers_topic,
        settings.dead_letter_topic,
        f"{settings.app_id}-customer-state-changelog",
        f"{settings.app_id}-dedupe-chunks-changelog",
    ]
    previous: dict[tuple[str, int], int] | None = None
    floor: dict[tuple[str, int], int] | None = None
    why = ""
    while time.monotonic() < deadline:
        for slot in cluster.reap():
            log(f"!! {slot.name} exited on its own while settling; restarting")
            slot.start()
        looping = _coordinator_loop(settings, cluster)
        if looping:
            log(f"!! the broker's coordinator loop: {looping}")
            return False, f"the broker's coordinator loop: {looping}"
        try:
            await cluster.wait_ready(cluster.running(), min(10.0, deadline - time.monotonic()))
        except TimeoutError as exc:
            why = str(exc)
            if time.monotonic() >= deadline:
                break
            continue
        caught_up, behind, floor = await observe.group_caught_up(settings, floor)
        ends = await observe.end_offsets(settings, outputs)
        if caught_up and ends == previous:
            log("quiesced: all ready, group caught up, outputs stable")
            return True, ""
        why = f"group {behind} records behind" if not caught_up else "outputs still growing"
        previous = ends if caught_up else None
        await asyncio.sleep(3.0)
    return False, f"not quiesced after {config.settle_timeout}s: {why}"


def seed_from(text: str | None) -> int:
    return int(text) if text else random.SystemRandom().randrange(10_000)
