"""The shell of erasure, router side: erasure requests in, forget control messages out.

An erasure request names a customer; like an event it is re-partitioned by
customer_id through the internal topic, so it reaches the partition that owns
the customer in order with the bundles routed before and after it (the engine
side is :meth:`processor.app.pipeline.Applier.apply_forget`). Input keys are not
trusted. A request that does not decode is dead-lettered with its reason and
counted, like a bad event; every request record ends in exactly one counted
outcome (``dead_lettered`` here, or ``applied`` once its partition forgot the
customer).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from processor.app.metrics import Metrics
from processor.app.partitioning import partition_for
from processor.app.pipeline import InputRecord, Router, Send
from processor.contracts.bundle import ForgetMessage, encode_forget
from processor.contracts.erasure import decode_erasure_request
from processor.contracts.inputs import Rejection
from processor.contracts.limits import Limits
from processor.contracts.outputs import Record

log = logging.getLogger(__name__)


class ErasureRouter:
    """Decode erasure requests, dead-letter bad ones, send each to its customer's partition."""

    def __init__(
        self,
        *,
        partitions: int,
        send_forget: Send,
        metrics: Metrics,
        dead_letters: Router,
        limits: Limits | None = None,
    ) -> None:
        self.partitions = partitions
        self.send_forget = send_forget
        self.metrics = metrics
        self.dead_letters = dead_letters
        """The event router: its dead letters and their counting are the same for requests."""
        self.limits = limits if limits is not None else Limits()

    async def route(self, records: Iterable[InputRecord]) -> None:
        """Route a batch in order; a send that fails raises (the caller fail-stops)."""
        for record in records:
            self.metrics.records_consumed.labels(record.topic, str(record.partition)).inc()
            position = f"{record.topic}/{record.partition}/{record.offset}"
            try:
                request = decode_erasure_request(record.value, record.key, position, self.limits)
            except Exception as exc:  # a decoder bug must not stop the stream
                log.exception("decoding an erasure request failed at %s", position)
                await self.dead_letters.dead_letter(record, "processing_error", repr(exc)[:500])
                continue
            if isinstance(request, Rejection):
                await self.dead_letters.dead_letter(record, request.reason, request.detail)
                continue
            message = ForgetMessage(request, (record.topic, record.partition, record.offset))
            partition = partition_for(request.customer_id, self.partitions)
            await self.send_forget(Record(None, encode_forget(message), []), partition)
