"""Pure building blocks of ``journey demo``: a synthetic population and the live funnel view.

Nothing here talks to Kafka, so the demo's data and its screen are tested without a broker.
"""

from processor.demo.funnel import FunnelSnapshot, FunnelTracker, render, render_summary
from processor.demo.population import DemoRecord, count_by_source, generate

__all__ = [
    "DemoRecord",
    "FunnelSnapshot",
    "FunnelTracker",
    "count_by_source",
    "generate",
    "render",
    "render_summary",
]
