"""The worker's HTTP surface: routes, who may call them, and how peers are asked.

``register_routes(worker)`` adds the routes to a worker's Faust app;
``access_middleware(settings)`` guards every route (see :mod:`processor.api.access`).
This package depends on :mod:`processor.api.interface`, never on ``processor.app``.
"""

from processor.api.access import access_middleware
from processor.api.routes import register_routes

__all__ = ["access_middleware", "register_routes"]
