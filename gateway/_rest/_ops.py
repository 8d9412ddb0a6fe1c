"""Operations endpoints on quart-trio: ``/healthz``, ``/stats`` (JSON), ``/metrics`` (Prometheus).

Rules of this module: no token, reads only; every JSON answer (and every
error the web framework raises: 404, 405, 500) is encoded by ``_asgi.py``, so
it has the one error envelope and ends with a newline, like the API's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from quart import Quart, Response
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from gateway._codes import Code
from gateway._hub import Hub
from gateway._rest._asgi import error_bytes, json_bytes
from gateway._runtime import Runtime
from gateway._stats import Stats, prometheus_text

_CODES = {404: Code.NOT_FOUND, 405: Code.METHOD_NOT_ALLOWED, 413: Code.BODY_TOO_LARGE}


def _json(body: Any, status: int = 200) -> Response:
    return Response(json_bytes(body), status=status, content_type="application/json")


def create_ops_app(
    runtime: Runtime, hub: Hub, *, stats: Stats, connection_count: Callable[[], int],
    degraded: Callable[[], str | None] | None = None,
) -> Quart:
    """The quart-trio application for everything outside ``/api/v1``.

    ``degraded`` says why the server is degraded while order entry still works
    (the scale-out engine role, when Redis is unreachable), or None.
    """
    app = QuartTrio("trade_engine")
    engine = runtime.engine

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        code = _CODES.get(status, Code.HTTP_ERROR)
        message = {
            404: "no such path; the REST API is under /api/v1 (see docs/protocol.md), "
                 "/healthz, /stats and /metrics are here, and the trading page is at /",
        }.get(status, error.description or code)
        response = Response(error_bytes(code, message), status=status,
                            content_type="application/json")
        for name, value in error.get_headers():  # a 405's Allow, above all
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.get("/healthz")
    async def healthz() -> Response:
        if runtime.failure is not None:
            return _json({"status": "degraded", "order_entry": False,
                          "error": str(runtime.failure), "last_seq": engine.last_seq})
        reason = degraded() if degraded is not None else None
        if reason is not None:
            return _json({"status": "degraded", "order_entry": True, "error": reason,
                          "last_seq": engine.last_seq})
        return _json({"status": "ok", "order_entry": True, "last_seq": engine.last_seq})

    @app.get("/stats")
    async def get_stats() -> Response:
        report = stats.as_json(hub.subscription_counts())
        report["connections"] = connection_count()
        return _json(report)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(prometheus_text(stats, hub.subscription_counts),
                        content_type="text/plain; version=0.0.4")

    return app
