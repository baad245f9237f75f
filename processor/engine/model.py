"""The journey model: which stages exist and which events are evidence of which stage.

A model is loaded once from a TOML journey definition and then only read. It is
validated completely at load time, so that a worker with a broken definition stops
before it consumes anything, with an error that names the file and the problem.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any

from processor.engine.triggers import Reactions, TriggerRule, parse_rules
from processor.engine.vocabulary import SOURCES, Source, Stage


@dataclass(frozen=True, slots=True)
class FixedEvidence:
    """The event is evidence of one stage, whenever it occurred."""

    stage: Stage


@dataclass(frozen=True, slots=True)
class RelativeEvidence:
    """The event's stage depends on when it occurred relative to the cycle's purchase.

    Support contacts are the example: a question before buying belongs to the
    evaluation, a complaint after it to life with the purchase.
    """

    before_purchase: Stage
    after_purchase: Stage


Evidence = FixedEvidence | RelativeEvidence


class DefinitionError(ValueError):
    """A journey definition that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True, slots=True)
class JourneyModel:
    """A validated journey definition."""

    name: str
    version: str
    stages: tuple[Stage, ...]
    purchase_stage: Stage
    new_cycle_after: timedelta
    evidence: Mapping[tuple[Source, str], Evidence]
    triggers: tuple[TriggerRule, ...] = ()
    identify: tuple[Source, str] = ("clickstream", "identify")
    """(source, type) of the identify event, which links an anonymous id to a customer
    (``[identity]`` in the definition); never evidence of a stage."""
    rank: Mapping[Stage, int] = field(init=False, repr=False, compare=False)
    reactions: Reactions = field(init=False, repr=False, compare=False)
    purchase_rank: int = field(init=False, repr=False, compare=False)
    """``rank[purchase_stage]``, computed once: the engine reads it for most events."""

    def __post_init__(self) -> None:
        rank = {stage: i for i, stage in enumerate(self.stages)}
        object.__setattr__(self, "rank", rank)
        object.__setattr__(self, "reactions", Reactions.of(self.triggers))
        object.__setattr__(self, "purchase_rank", rank[self.purchase_stage])

    def evidence_for(self, source: Source, event_type: str) -> Evidence | None:
        """What an event of this source and type is evidence of; None means ignore it."""
        return self.evidence.get((source, event_type))

    def known_types(self, source: Source) -> frozenset[str]:
        return frozenset(t for (s, t) in self.evidence if s == source)

    @property
    def label(self) -> dict[str, str]:
        """The ``model`` object written into every output."""
        return {"name": self.name, "version": self.version}


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """Parse ``"90s"``, ``"15m"``, ``"1h"`` or ``"30d"``."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use a number and s, m, h or d, as in '30d')")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def default_definition_text() -> str:
    return (
        resources.files("processor.definitions")
        .joinpath("buying-process.toml")
        .read_text(encoding="utf-8")
    )


def load_model(path: str | Path | None = None) -> JourneyModel:
    """Load and validate a journey definition; None loads the default that ships inside the package.

    Raises DefinitionError naming the file and the first problem found.
    """
    if path is None:
        return parse_model(default_definition_text(), origin="<default buying-process.toml>")
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DefinitionError(f"{path}: cannot read the journey definition: {exc}") from exc
    return parse_model(text, origin=str(path))


def parse_model(text: str, origin: str = "<string>") -> JourneyModel:
    """Parse a TOML journey definition; ``origin`` names it in errors."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DefinitionError(f"{origin}: not valid TOML: {exc}") from exc
    try:
        return _build(doc)
    except (KeyError, TypeError, ValueError) as exc:
        message = exc.args[0] if exc.args else str(exc)
        raise DefinitionError(f"{origin}: {message}") from exc


def _text(doc: Mapping[str, Any], key: str) -> str:
    if key not in doc:
        raise KeyError(f"missing required key {key!r}")
    value = doc[key]
    if not isinstance(value, str) or not value.strip():
        raise TypeError(f"{key!r} must be a non-empty string, not {value!r}")
    return value


def _build(doc: Mapping[str, Any]) -> JourneyModel:
    known = {
        "name",
        "version",
        "stages",
        "purchase_stage",
        "new_cycle_after",
        "evidence",
        "triggers",
        "identity",
    }
    unknown = sorted(set(doc) - known)
    if unknown:
        raise ValueError(f"unknown top-level keys {unknown}; expected some of {sorted(known)}")

    stages = doc.get("stages")
    if not isinstance(stages, list) or not stages or not all(isinstance(s, str) for s in stages):
        raise TypeError("'stages' must be a non-empty list of stage names")
    if len(set(stages)) != len(stages):
        raise ValueError(f"'stages' has duplicates: {stages}")

    purchase_stage = _text(doc, "purchase_stage")
    if purchase_stage not in stages:
        raise ValueError(f"'purchase_stage' {purchase_stage!r} is not one of the stages {stages}")

    new_cycle_after = parse_duration(_text(doc, "new_cycle_after"))

    def stage(value: Any, where: str) -> Stage:
        if not isinstance(value, str) or value not in stages:
            raise ValueError(f"{where}: {value!r} is not one of the stages {stages}")
        return value

    raw_evidence = doc.get("evidence")
    if not isinstance(raw_evidence, dict) or not raw_evidence:
        raise TypeError("'evidence' must be a table of sources ([evidence.clickstream] ...)")
    evidence: dict[tuple[Source, str], Evidence] = {}
    for source, types in raw_evidence.items():
        if source not in SOURCES:
            raise ValueError(f"evidence source {source!r} is not one of {list(SOURCES)}")
        if not isinstance(types, dict):
            raise TypeError(f"[evidence.{source}] must map event types to stages")
        for event_type, target in types.items():
            where = f"evidence.{source}.{event_type}"
            if isinstance(target, str):
                evidence[(source, event_type)] = FixedEvidence(stage(target, where))
            elif isinstance(target, dict):
                extra = set(target) - {"before_purchase", "after_purchase"}
                if extra or len(target) != 2:
                    raise ValueError(
                        f"{where}: expected {{ before_purchase = ..., after_purchase = ... }}"
                    )
                evidence[(source, event_type)] = RelativeEvidence(
                    before_purchase=stage(target["before_purchase"], where),
                    after_purchase=stage(target["after_purchase"], where),
                )
            else:
                raise TypeError(f"{where}: expected a stage name or a relative table")

    if not any(
        isinstance(e, FixedEvidence) and e.stage == purchase_stage for e in evidence.values()
    ):
        raise ValueError(f"no event type is evidence of the purchase stage {purchase_stage!r}")

    identify = _identify(doc.get("identity"), evidence)
    triggers = parse_rules(
        doc.get("triggers"),
        stages=tuple(stages),
        known_events=lambda source, event_type: (source, event_type) in evidence,
        parse_duration=parse_duration,
    )
    return JourneyModel(
        name=_text(doc, "name"),
        version=_text(doc, "version"),
        stages=tuple(stages),
        purchase_stage=purchase_stage,
        new_cycle_after=new_cycle_after,
        evidence=evidence,
        triggers=triggers,
        identify=identify,
    )


def _identify(raw: Any, evidence: Mapping[tuple[Source, str], Evidence]) -> tuple[Source, str]:
    """``[identity]``: ``source`` (default clickstream) and ``type`` (default identify)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict) or set(raw) - {"source", "type"}:
        raise ValueError("[identity] may only set 'source' and 'type' (of the identify event)")
    source = raw.get("source", "clickstream")
    event_type = raw.get("type", "identify")
    if source not in SOURCES:
        raise ValueError(f"identity.source {source!r} is not one of {list(SOURCES)}")
    if not isinstance(event_type, str) or not event_type:
        raise TypeError("identity.type must be a non-empty string")
    if (source, event_type) in evidence:
        raise ValueError(
            f"identity: {source}/{event_type} is evidence of a stage; the identify event "
            "links ids and must not be evidence"
        )
    return source, event_type
