"""What a trigger kind is: the interface that parsing and evaluation call through.

A kind is one ``when`` value of ``[[triggers]]``, one module of this package, and one
entry of :data:`~processor.engine.triggers.registry.KINDS`. To add one, write its
module (a subclass of :class:`Kind` and its one instance) and list it in the registry.

Imports go one way: a kind imports this module, ``rules`` and ``state``; the registry
imports the kinds; ``parse`` and ``evaluate`` import the registry.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import ClassVar, NamedTuple

from processor.engine.triggers.rules import EventMatch, RuleDoc, TriggerRule
from processor.engine.vocabulary import Event, StageChange, Timer

Fire = Callable[[TriggerRule, datetime, str, tuple[str, ...]], None]
"""``fire(rule, fired_at, reason, evidence)``; it checks ``min_cycle``, once per cycle and
the cool-down, so a kind only says when its condition holds."""


class Applied(NamedTuple):
    """One applied event, as every rule's kind sees it (built once per evaluation)."""

    event: Event
    stage: str
    """The customer's stage now."""
    changes: tuple[StageChange, ...]
    """The stage changes the event made."""
    judged: Sequence[tuple[Event, str]]
    """The events event rules look at, each with the stage it is evidence of at its own
    time (see :func:`~processor.engine.triggers.on_applied`)."""
    timers: dict[str, Timer]
    """The armed timers by rule name: a kind arms, re-arms or cancels its rule's."""
    fire: Fire


class Kind(ABC):
    """One kind of trigger rule: how it is parsed and what it does with an applied event."""

    name: ClassVar[str]
    """The ``when`` value."""
    keys: ClassVar[frozenset[str]]
    """The keys a rule of this kind may have besides name, when, repeat and cooldown."""

    @abstractmethod
    def parse(self, doc: RuleDoc) -> TriggerRule:
        """The rule of one table; raise KeyError, TypeError or ValueError saying what is wrong."""

    @abstractmethod
    def on_applied(self, rule: TriggerRule, applied: Applied) -> None:
        """What ``rule`` does after an event was applied: ``applied.fire`` it, or arm,
        re-arm or cancel its timer in ``applied.timers``."""

    def stages(self, rule: TriggerRule) -> Iterable[str]:
        """The stages whose entry ``rule`` reacts to.

        :class:`~processor.engine.triggers.evaluate.Reactions` skips the evaluation after
        a change into any other stage, so a kind names every stage it reacts to.
        """
        return ()

    def events(self, rule: TriggerRule) -> Iterable[EventMatch]:
        """The events ``rule`` looks at; the evaluation of any other event may be skipped."""
        return ()
