"""The pure stage engine: no I/O, no faust, no aiokafka.

Import from here: ``from processor.engine import apply, load_model``.
"""

from processor.engine.core import (
    DEDUPE_CHUNK,
    DEDUPE_KEEP_CHUNKS,
    RECENT_CHANGES,
    ChunkSealed,
    CustomerState,
    Event,
    Outcome,
    Output,
    StageChange,
    Step,
    SupportContact,
    TriggerRef,
    apply,
    reemit,
    stage_change_id,
)
from processor.engine.model import (
    SOURCES,
    DefinitionError,
    FixedEvidence,
    JourneyModel,
    RelativeEvidence,
    Source,
    Stage,
    load_model,
    parse_duration,
    parse_model,
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
    "TriggerRef",
    "apply",
    "load_model",
    "parse_duration",
    "parse_model",
    "reemit",
    "stage_change_id",
]
