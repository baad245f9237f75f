"""The pure stage engine: no I/O, no faust, no aiokafka.

Import from here: ``from processor.engine import apply, load_model``.
"""

from processor.engine.core import apply, reemit
from processor.engine.model import (
    DefinitionError,
    FixedEvidence,
    JourneyModel,
    RelativeEvidence,
    load_model,
    parse_duration,
    parse_model,
)
from processor.engine.vocabulary import (
    DEDUPE_CHUNK,
    DEDUPE_KEEP_CHUNKS,
    RECENT_CHANGES,
    SOURCES,
    ChunkSealed,
    CustomerState,
    Event,
    EventRef,
    Outcome,
    Output,
    Source,
    Stage,
    StageChange,
    Step,
    SupportContact,
    stage_change_id,
)

__all__ = [
    "DEDUPE_CHUNK",
    "DEDUPE_KEEP_CHUNKS",
    "RECENT_CHANGES",
    "SOURCES",
    "ChunkSealed",
    "CustomerState",
    "DefinitionError",
    "Event",
    "EventRef",
    "FixedEvidence",
    "JourneyModel",
    "Outcome",
    "Output",
    "RelativeEvidence",
    "Source",
    "Stage",
    "StageChange",
    "Step",
    "SupportContact",
    "apply",
    "load_model",
    "parse_duration",
    "parse_model",
    "reemit",
    "stage_change_id",
]
