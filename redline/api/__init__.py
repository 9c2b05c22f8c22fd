"""HTTP API + WebSocket for the duty console and automation (docs/API.md).

``create_app(station)`` builds the ASGI app for a running ``Station``; ``HttpServer`` serves it
with uvicorn inside the station's own event loop (``redline serve --http HOST:PORT``).
"""

from redline.api.app import HttpServer, create_app, openapi_schema
from redline.api.auth import ApiConfig

__all__ = ["ApiConfig", "HttpServer", "create_app", "openapi_schema"]
