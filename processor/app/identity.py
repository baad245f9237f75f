"""The shell of identity: identify events link, merge messages merge, aliases forward.

The pure decisions are :mod:`processor.engine.identity`'s (``link``, ``merge``,
``resolve``); this module carries them out against the store and the internal
topic, for :class:`processor.app.pipeline.Applier`. The route (see the README,
"Identity"):

1. The router sends an identify event to the **anonymous id's** partition
   (:func:`processor.engine.identity.partition_key`). There :meth:`IdentityShell.link`
   writes the alias (anonymous id -> customer) into the ``customer-aliases``
   table, sends a ``merge`` control message with the anonymous state and its
   sealed chunks to the customer's partition, waits until it is delivered,
   tombstones the anonymous state and chunks, and publishes the
   ``identity_merged`` record.
2. The customer's partition applies the merge message (:meth:`IdentityShell.merge`),
   remembering the identify event id like an event id: a repeat is a duplicate
   and re-emits what the merge emitted, identically.
3. Later events of the anonymous id alone still reach its partition, find the
   alias and are sent on in a ``forward`` message (:meth:`IdentityShell.forward`),
   after the merge message and by the same producer, so never before it. They
   are counted once, where they are applied.

Forgetting a customer first forgets its aliases (:meth:`IdentityShell.forget_aliases`):
the customer's alias list names them, and it must not be gone before their forgets are out.
Forgetting a linked anonymous id alone first sends its customer's partition an unlink
(:meth:`IdentityShell.unlink_forgotten`, a v3 forget message): the alias is the only record
there that names the customer, so it goes only once the unlink is delivered; the customer's
partition then takes the id out of the customer's alias list and state
(:meth:`IdentityShell.unlink`).
Every failure raises: the engine agent stops the worker (fail-stop).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from processor.app.metrics import Metrics
from processor.app.store import CustomerStore, Settle
from processor.contracts.bundle import (
    ForgetMessage,
    ForwardMessage,
    InputPosition,
    MergeMessage,
    encode_forget,
    encode_forward,
    encode_merge,
)
from processor.contracts.identity import Alias, encode_identity_merged
from processor.contracts.outputs import Record
from processor.contracts.state import chunk_key
from processor.engine import ChunkSealed, CustomerState, Event, EventRef, JourneyModel, Step
from processor.engine.core import reemit
from processor.engine.erasure import ForgetRequest
from processor.engine.identity import is_anonymous, is_identify, link, merge, resolve, unlink

Send = Callable[[Record, int | None], Awaitable[None]]
Events = Sequence[tuple[Event, InputPosition | None]]
ApplyCustomer = Callable[[str, Events, int], Awaitable[None]]
"""The engine's apply of a customer's run of events: (customer id, events, partition)."""


class Archive(Protocol):
    """A customer's sealed dedupe chunks, as the engine reads and writes them (pipeline.py)."""

    def holds(self, state: CustomerState, event_id: str) -> bool: ...
    async def seal(self, sealed: ChunkSealed) -> None: ...


class IdentityShell:
    """Carries out identify, merge, forward and alias forgets for the engine."""

    def __init__(
        self,
        *,
        model: JourneyModel,
        store: CustomerStore,
        route: Callable[[str], int],
        send_internal: Send | None,
        send_identity: Send | None,
        send_outputs: Callable[[Step], Awaitable[None]],
        metrics: Metrics,
        ce_source: str,
        settle: Settle | None,
    ) -> None:
        self.model = model
        self.store = store
        self.route = route
        """The partition that owns an id (the router's partitioner)."""
        self.send_internal = send_internal
        self.send_identity = send_identity
        self.send_outputs = send_outputs
        self.metrics = metrics
        self.ce_source = ce_source
        self.settle = settle

    async def apply(self, key: str, events: Events, partition: int, run: ApplyCustomer) -> None:
        """Apply one id's released events in order: identify links, linked anonymous ones forward.

        Runs of other events go to ``run`` (the engine's ordinary apply) as they
        come, so every event sees what the ones before it did.
        """
        alias = self.store.alias(key)
        own: list[tuple[Event, InputPosition | None]] = []
        onward: list[tuple[Event, InputPosition | None]] = []
        for event, origin in events:
            if is_identify(event, self.model):
                await self._flush(key, own, onward, alias, partition, run)
                alias = await self.link(event, origin, partition, alias)
            elif alias is not None and is_anonymous(event):
                if own:
                    await self._flush(key, own, [], alias, partition, run)
                onward.append((resolve(event, alias.customer_id), origin))
            else:
                if onward:
                    await self._flush(key, [], onward, alias, partition, run)
                own.append((event, origin))
        await self._flush(key, own, onward, alias, partition, run)

    async def _flush(
        self,
        key: str,
        own: list[tuple[Event, InputPosition | None]],
        onward: list[tuple[Event, InputPosition | None]],
        alias: Alias | None,
        partition: int,
        run: ApplyCustomer,
    ) -> None:
        if own:
            await run(key, list(own), partition)
            own.clear()
        if onward:
            assert alias is not None
            await self.forward(alias.customer_id, onward)
            onward.clear()

    async def link(
        self, event: Event, origin: InputPosition | None, partition: int, alias: Alias | None
    ) -> Alias | None:
        """An identify event on the anonymous id's partition; returns the alias now stored.

        The same identify again (a replay) redoes everything, identically; any
        other identify of an id already linked links nothing (the first wins) and
        counts as ``ignored``. The identify's outcome is otherwise counted where
        the merge message is applied.
        """
        anonymous_id, customer_id = event.anonymous_id, event.customer_id
        assert anonymous_id is not None
        if alias is not None and alias != Alias(customer_id, event.event_id):
            self._count(event.topic, origin, "ignored")
            return alias
        if self.send_internal is None or self.send_identity is None:
            raise RuntimeError("an identify event, but no internal or identities topic to send to")
        alias = Alias(customer_id, event.event_id)
        await self.store.put_alias(partition, anonymous_id, alias)
        state = self.store.get(anonymous_id)
        decision = link(state, self.store.sealed(state), event, self.model)
        # Events of v1 bundles (before event-time ordering) have no position, but they
        # carry no anonymous id either: an identify always has one.
        source = (event.topic, *(origin if origin is not None else (partition, 0)))
        message = MergeMessage(
            customer_id=customer_id,
            anonymous_id=anonymous_id,
            identify=EventRef(event.event_id, event.topic, event.type),
            identified_at=event.occurred_at,
            state=decision.state,
            chunks=decision.chunks,
            source=(source[0], source[1], source[2]),
        )
        await self.send_internal(Record(None, encode_merge(message), []), self.route(customer_id))
        # The anonymous state may go only once the merge message carrying it is delivered.
        if self.settle is not None and not await self.settle():
            raise RuntimeError(f"the merge message of {anonymous_id!r} was not delivered")
        await self.store.tombstone(partition, anonymous_id, decision.tombstones, state, self.settle)
        await self.send_identity(encode_identity_merged(decision.record, self.ce_source), None)
        return alias

    async def forward(self, customer_id: str, events: Events) -> None:
        """The second hop: a linked anonymous id's events, to its customer's partition."""
        if self.send_internal is None:
            raise RuntimeError("a linked anonymous id, but no internal topic to forward on")
        value = encode_forward(ForwardMessage(customer_id, tuple(events)))
        await self.send_internal(Record(None, value, []), self.route(customer_id))
        self.metrics.forwarded.inc(len(events))

    async def merge(self, message: MergeMessage, partition: int, archive: Archive) -> None:
        """Merge the anonymous journey into the customer's, on the customer's partition.

        The identify event id is remembered like an event id (in the open
        chunk, or a sealed one): a repeated merge re-emits the merged change
        with the same id and bytes and rewrites the state (as a replayed event
        does), and counts ``duplicate``.
        """
        customer_id = message.customer_id
        # The customer's alias list first, whatever the merge finds (even nothing on
        # either side): forgetting the customer must find every linked anonymous id.
        await self.store.add_alias_of(partition, customer_id, message.anonymous_id)
        before = self.store.get(customer_id)
        via = message.identify
        outcome: str
        if before is not None and archive.holds(before, via.event_id):
            step = reemit(before, via.event_id)
            after, outcome = step.state, "duplicate"
            await self.send_outputs(step)
        else:
            merged = merge(
                before,
                message.state,
                self.model,
                into=customer_id,
                via=via,
                b_sealed=message.chunks,
            )
            after, outcome = merged.state, merged.outcome
            if outcome == "applied":
                for sealed in merged.sealed:
                    await archive.seal(sealed)
                for index in merged.expired:
                    await self.store.chunks.delete(chunk_key(customer_id, index), partition)
            await self.send_outputs(Step(after, merged.changes, merged.outcome))
        if after is not None and (after is not before or outcome == "duplicate"):
            await self.store.put(partition, before, after)
        topic, input_partition, _ = message.source
        self.metrics.events.labels(topic, via.type, outcome).inc()
        self.metrics.outcome(topic, input_partition, outcome)
        if outcome == "applied":
            self.metrics.merges.inc()

    async def forget_aliases(self, message: ForgetMessage) -> None:
        """Before a customer goes: send a forget for each of its aliases, and wait for them.

        The aliases live on the anonymous ids' partitions; the customer's alias list
        (on its own partition) is the only place that names them, so it is deleted
        only once their forgets are delivered (a crash before that replays the
        forget, which finds the list and sends them again).
        """
        aliases = self.store.aliases_of(message.request.customer_id)
        if not aliases or message.alias_of is not None:
            return
        if self.send_internal is None:
            raise RuntimeError("a customer with aliases, but no internal topic to forget them on")
        request = message.request
        for anonymous_id in aliases:
            alias_request = ForgetRequest(anonymous_id, request.request_id, request.requested_at)
            value = encode_forget(ForgetMessage(alias_request, message.source, request.customer_id))
            await self.send_internal(Record(None, value, []), self.route(anonymous_id))
        if self.settle is not None and not await self.settle():
            raise RuntimeError(f"the alias forgets of {request.customer_id!r} were not delivered")

    async def unlink_forgotten(self, message: ForgetMessage) -> None:
        """Before a linked anonymous id's alias goes: send its customer an unlink, and wait for it.

        Only for a forget of the id itself (an alias's forget comes from its customer, which
        is being forgotten whole). The request travels along, for the record; it is
        confirmed and counted here, by the caller, not where the unlink is applied. A
        replay that still finds the alias sends the same message again.
        """
        if message.alias_of is not None or message.unlink_from is not None:
            return
        request = message.request
        alias = self.store.alias(request.customer_id)
        if alias is None:
            return
        if self.send_internal is None:
            raise RuntimeError("a linked anonymous id, but no internal topic to unlink it on")
        unlinking = ForgetMessage(request, message.source, unlink_from=alias.customer_id)
        await self.send_internal(
            Record(None, encode_forget(unlinking), []), self.route(alias.customer_id)
        )
        if self.settle is not None and not await self.settle():
            raise RuntimeError(f"the unlink of {request.customer_id!r} was not delivered")

    async def unlink(self, message: ForgetMessage, partition: int) -> None:
        """On the customer's partition: a forgotten anonymous id out of its alias list and state.

        The list is rewritten without the id (deleted when empty) and the state without
        the id in its merged changes, both every time, even when nothing changed: a
        replay after a crash may find the local store ahead of the changelog.
        """
        customer_id = message.unlink_from
        assert customer_id is not None
        before = self.store.get(customer_id)
        done = unlink(self.store.aliases_of(customer_id), before, message.request.customer_id)
        await self.store.put_aliases_of(partition, customer_id, done.aliases)
        if done.state is not None:
            await self.store.put(partition, before, done.state)

    def _count(self, topic: str, origin: InputPosition | None, outcome: str) -> None:
        self.metrics.events.labels(topic, self.model.identify[1], outcome).inc()
        if origin is not None:
            self.metrics.outcome(topic, origin[0], outcome)
