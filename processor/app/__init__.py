"""The Faust shell around the engine. ``create_app(settings)`` is the entry point."""

from processor.app.factory import JourneyApp, create_app

__all__ = ["JourneyApp", "create_app"]
