"""The trigger kinds, by their ``when`` value: what parsing and evaluation dispatch on."""

from __future__ import annotations

from collections.abc import Mapping

from processor.engine.triggers.kinds import absent, event, stage_entered
from processor.engine.triggers.kinds.absent import Absent
from processor.engine.triggers.kinds.base import Kind

KINDS: Mapping[str, Kind] = {
    kind.name: kind for kind in (stage_entered.KIND, event.KIND, absent.KIND)
}
"""A plain dict (typed read-only): :func:`~processor.engine.triggers.on_applied` looks a
kind up for every rule of every event it evaluates."""

TIMED: Absent = absent.KIND
"""The kind whose timers :func:`~processor.engine.triggers.on_tick` fires: only absences
arm timers. A timer is an absence's even if a redeploy since gave its rule another kind
(same name), so it fires with the absence's reason, as it did before the kinds were split."""
