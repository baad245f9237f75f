"""A worker's two consumers seen as one: the intake's (input topics) and Faust's (internal topic).

Lag, the stall check, idleness and "caught up" look at every partition a worker
reads, whichever consumer reads it. This module is what both sides import, so the
operations code needs neither the intake nor Faust's consumer internals.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any, Protocol


class ConsumerView(Protocol):
    """What the operations side reads of one consumer."""

    def assignment(self) -> Collection[Any]: ...

    def highwater(self, tp: Any) -> int | None: ...

    async def position(self, tp: Any) -> int: ...


class InputView(ConsumerView, Protocol):
    """The consumer of the input topics also knows what it committed and the topics' sizes."""

    @property
    def committed(self) -> Mapping[Any, int]: ...

    def partitions_for_topic(self, topic: str) -> set[int] | None: ...


class Consumers:
    """Every partition this worker reads, and per partition the consumer that reads it."""

    def __init__(
        self, faust_consumer: Callable[[], Any], inputs: InputView, sources: Collection[str]
    ) -> None:
        self._faust = faust_consumer
        self.inputs = inputs
        self.sources = frozenset(sources)

    def _for(self, tp: Any) -> Any:
        return self.inputs if tp.topic in self.sources else self._faust()

    def assignment(self) -> set[Any]:
        internal = {tp for tp in self._faust().assignment() if tp.topic not in self.sources}
        return internal | set(self.inputs.assignment())

    def highwater(self, tp: Any) -> int | None:
        end = self._for(tp).highwater(tp)
        return None if end is None else int(end)

    async def position(self, tp: Any) -> int:
        return int(await self._for(tp).position(tp))

    @property
    def committed(self) -> dict[Any, int]:
        """Committed offsets (Faust's consumer keeps its own in ``_committed_offset``)."""
        found: dict[Any, int] = {
            tp: offset
            for tp, offset in getattr(self._faust(), "_committed_offset", {}).items()
            if tp.topic not in self.sources and offset is not None
        }
        for tp, offset in self.inputs.committed.items():
            found[tp] = offset  # Faust's TP and aiokafka's TopicPartition: equal tuples
        return found
