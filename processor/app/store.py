"""A customer's stored data as one thing: state, dedupe chunks, aliases, timer index, funnel.

Sits above the tables (the :class:`~processor.app.pipeline.StateTable` protocol, so
Faust tables and the dict tables of tests both fit) and below the engine. Erasure
needs this: deleting a customer touches every table it has keys in, the timer
index and the funnel counts, in an order that a crash at any point leaves
repeatable (chunks first, delivered before the state goes, the state last: a
replayed forget that still finds the state does everything again; one that
finds none tombstones the state key again and confirms).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

from processor.contracts.identity import (
    Alias,
    aliases_key,
    decode_alias,
    decode_alias_list,
    encode_alias,
    encode_alias_list,
)
from processor.contracts.state import (
    chunk_key,
    decode_chunk,
    decode_state,
    encode_state,
    forget_window,
)
from processor.engine import CustomerState
from processor.engine.erasure import Forget


class StateTable(Protocol):
    """A table read like a mapping and written with its changelog partition (see tables.py)."""

    def get(self, key: bytes, /) -> bytes | None: ...
    async def put(self, key: bytes, value: bytes, partition: int) -> None: ...
    async def delete(self, key: bytes, partition: int) -> None: ...


StateWritten = Callable[[int, "CustomerState | None", "CustomerState"], None]
"""Told (partition, before, after) on every state write: keeps the local funnel current."""

Settle = Callable[[], Awaitable[bool]]
"""Waits for every delivery so far; False if one failed (failstop.Deliveries.settle)."""

StateDeleted = Callable[[int, CustomerState], None]
"""Told (partition, the state deleted): the funnel and the timer index drop the customer."""


DECODED_SIZE = 8_192
"""Decoded states the store remembers (see :class:`CustomerStore`) before it forgets them all.

On the benchmark population a decoded state with its bytes is about 4 KB, so a
full memo is about 34 MB of a worker's memory."""


class CustomerStore:
    """Get, put and delete one customer's data; every write names its changelog partition.

    Decoding a stored state costs about 15 us, and a customer active in one bundle
    is usually active in the next: the store remembers the last states it wrote or
    read, with their bytes. ``get`` still reads the table, and uses the
    remembered state only when the table holds exactly the bytes it came from
    (equal bytes decode to an equal state, and states are immutable), so a
    changelog recovery, a delete or a write by anyone else is never hidden.
    """

    def __init__(
        self,
        states: StateTable,
        chunks: StateTable,
        *,
        on_state_written: StateWritten | None = None,
        on_state_deleted: StateDeleted | None = None,
        aliases: StateTable | None = None,
    ) -> None:
        self.states = states
        self.chunks = chunks
        self.aliases = aliases
        """anonymous id -> :class:`Alias`, on the anonymous id's partition, and a customer's
        list of merged anonymous ids (:func:`aliases_key`), on the customer's (identity)."""
        self.on_state_written = on_state_written
        self.on_state_deleted = on_state_deleted
        self.decoded: dict[str, tuple[bytes, CustomerState]] = {}
        """customer id -> (stored bytes, the state they decode to): bounded by DECODED_SIZE."""

    def get(self, customer_id: str) -> CustomerState | None:
        raw = self.states.get(customer_id.encode())
        if raw is None:
            return None
        known = self.decoded.get(customer_id)
        if known is not None and known[0] == raw:
            return known[1]
        state = decode_state(raw)
        self._remember(customer_id, raw, state)
        return state

    def _remember(self, customer_id: str, raw: bytes, state: CustomerState) -> None:
        if len(self.decoded) >= DECODED_SIZE:
            self.decoded.clear()
        self.decoded[customer_id] = (raw, state)

    async def put(self, partition: int, before: CustomerState | None, after: CustomerState) -> None:
        raw = encode_state(after)
        await self.states.put(after.customer_id.encode(), raw, partition)
        self._remember(after.customer_id, raw, after)
        if self.on_state_written is not None:
            self.on_state_written(partition, before, after)

    async def delete(
        self,
        partition: int,
        customer_id: str,
        decision: Forget,
        before: CustomerState | None,
        settle: Settle | None = None,
    ) -> None:
        """Tombstone every key the decision names, and the id's alias; a failed write raises.

        ``settle`` waits until the chunk tombstones are delivered, before the state
        goes: a local delete happens at once and its changelog record later, so a
        crash in between must still find the state (which names the chunks) for
        the replayed forget to send them again. The state's own tombstone is
        written even when no state is found: a replay after a crash may find the
        local store ahead of the changelog. So is the alias key (an anonymous id
        forgotten, itself or with its customer), for the same reason.
        """
        await self.tombstone(partition, customer_id, decision.chunks, before, settle)
        if self.aliases is not None:
            await self.aliases.delete(customer_id.encode(), partition)
            await self.aliases.delete(aliases_key(customer_id), partition)

    async def tombstone(
        self,
        partition: int,
        customer_id: str,
        chunks: Iterable[int],
        before: CustomerState | None,
        settle: Settle | None = None,
    ) -> None:
        """Delete the state and the given chunks: chunks first, delivered, then the state."""
        chunks = tuple(chunks)
        for index in chunks:
            await self.chunks.delete(chunk_key(customer_id, index), partition)
        if chunks and settle is not None and not await settle():
            raise RuntimeError(f"the dedupe chunks of {customer_id!r} were not tombstoned")
        await self.states.delete(customer_id.encode(), partition)
        self.decoded.pop(customer_id, None)
        forget_window(customer_id)  # the encoder's copy of its dedupe window, too
        if before is not None and self.on_state_deleted is not None:
            self.on_state_deleted(partition, before)

    def sealed(self, state: CustomerState | None) -> list[tuple[str, ...]]:
        """The state's sealed dedupe chunks still stored, oldest first (for a merge message)."""
        if state is None:
            return []
        found = []
        for index in state.sealed_chunks:
            raw = self.chunks.get(chunk_key(state.customer_id, index))
            if raw is not None:
                found.append(tuple(sorted(decode_chunk(raw))))
        return found

    def alias(self, anonymous_id: str) -> Alias | None:
        """The customer an anonymous id was linked to, if this partition linked it."""
        if self.aliases is None:
            return None
        raw = self.aliases.get(anonymous_id.encode())
        return None if raw is None else decode_alias(raw)

    async def put_alias(self, partition: int, anonymous_id: str, alias: Alias) -> None:
        if self.aliases is None:
            raise RuntimeError("an identify event, but no alias table to link it in")
        await self.aliases.put(anonymous_id.encode(), encode_alias(alias), partition)

    def aliases_of(self, customer_id: str) -> tuple[str, ...]:
        """The anonymous ids merged into a customer, oldest first (on its partition)."""
        if self.aliases is None:
            return ()
        raw = self.aliases.get(aliases_key(customer_id))
        return () if raw is None else decode_alias_list(raw)

    async def put_aliases_of(
        self, partition: int, customer_id: str, aliases: tuple[str, ...]
    ) -> None:
        """Write the customer's list of merged anonymous ids as given; an empty one is deleted.

        Written even when unchanged: a replay after a crash may find the local store
        ahead of the changelog, and this puts the changelog right.
        """
        if self.aliases is None:
            raise RuntimeError("an alias to unlink, but no alias table to unlink it in")
        if aliases:
            await self.aliases.put(aliases_key(customer_id), encode_alias_list(aliases), partition)
        else:
            await self.aliases.delete(aliases_key(customer_id), partition)

    async def add_alias_of(self, partition: int, customer_id: str, anonymous_id: str) -> None:
        """Remember that ``anonymous_id`` was linked to the customer (written once per id)."""
        if self.aliases is None:
            raise RuntimeError("a merge message, but no alias table to remember it in")
        known = self.aliases_of(customer_id)
        if anonymous_id not in known:
            value = encode_alias_list((*known, anonymous_id))
            await self.aliases.put(aliases_key(customer_id), value, partition)
