"""What the HTTP surface needs of a running worker, and nothing more.

The app factory builds a ``JourneyApp`` that satisfies :class:`Worker`; this
package depends only on these protocols and the contracts, never on
``processor.app``. That keeps ``import processor.api`` working on its own (the
factory imports the API to register its routes, not the other way round).
"""

from __future__ import annotations

from typing import Any, Protocol

from faust import App as FaustApp
from prometheus_client import CollectorRegistry

from processor.contracts.funnel import PartitionCounts
from processor.engine import JourneyModel
from processor.settings import Settings


class HasRegistry(Protocol):
    @property
    def registry(self) -> CollectorRegistry: ...


class WorkerOperations(Protocol):
    """Readiness and the partitions (and their funnel counts) this worker owns."""

    def readiness(self) -> tuple[bool, str]: ...

    def engine_partitions(self) -> set[int]: ...

    @property
    def counts(self) -> PartitionCounts: ...


class Worker(Protocol):
    """A configured worker: settings, model, Faust app, metrics, state table, operations."""

    @property
    def settings(self) -> Settings: ...

    @property
    def model(self) -> JourneyModel: ...

    @property
    def faust(self) -> FaustApp: ...

    @property
    def metrics(self) -> HasRegistry: ...

    @property
    def states(self) -> Any: ...

    @property
    def operations(self) -> WorkerOperations: ...

    @property
    def aliases(self) -> Any:
        """The customer-aliases table (anonymous id -> customer), or None."""
        ...
