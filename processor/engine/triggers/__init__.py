"""Trigger rules: a few well-timed signals for marketing automation, derived purely.

Three kinds, declared under ``[[triggers]]`` in the journey definition, one module each
in :mod:`.kinds` (``stage_entered``, ``event``, ``absent``; :mod:`.kinds.base` says what
a kind is), listed by ``when`` value in :mod:`.registry`.

A trigger fires at most once per customer per cycle unless ``repeat = true``, and then
not again before its ``cooldown``. Everything here is evaluated in event time.

Where things are:

* :mod:`.rules`: what a rule is (``TriggerRule``, ``EventMatch``, ``Predicate``) and the
  parsing helpers the kinds share; :mod:`.parse`: ``parse_rules``;
* :mod:`.state`: the customer's context and the firing counts (the trigger state, the
  triggers fired and their ids are value types in :mod:`processor.engine.vocabulary`);
* :mod:`.evaluate`: ``on_applied``, ``on_tick``, and ``Reactions`` (what can be skipped).

Import from here: ``from processor.engine.triggers import on_applied``.
"""

from processor.engine.triggers.evaluate import Reactions, on_applied, on_tick
from processor.engine.triggers.kinds.base import Kind
from processor.engine.triggers.parse import parse_rules
from processor.engine.triggers.registry import KINDS
from processor.engine.triggers.rules import EventMatch, Predicate, TriggerRule, parse_predicate
from processor.engine.triggers.state import Context
from processor.engine.vocabulary import (
    RECENT_TRIGGERS,
    TRIGGER_NAMESPACE,
    Fired,
    Timer,
    TriggerFired,
    TriggerState,
    trigger_id,
)

__all__ = [
    "KINDS",
    "RECENT_TRIGGERS",
    "TRIGGER_NAMESPACE",
    "Context",
    "EventMatch",
    "Fired",
    "Kind",
    "Predicate",
    "Reactions",
    "Timer",
    "TriggerFired",
    "TriggerRule",
    "TriggerState",
    "on_applied",
    "on_tick",
    "parse_predicate",
    "parse_rules",
    "trigger_id",
]
