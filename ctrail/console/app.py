"""The console application (FastAPI) and its server (uvicorn).

FastAPI's own /docs, /redoc and /openapi.json are off: they would answer without a session,
and Swagger UI loads its script from a CDN. The OpenAPI document is at /api/openapi.json,
behind the gate like everything else.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from ctrail import __version__
from ctrail.components import Store
from ctrail.console.api import build_router
from ctrail.console.auth import Authenticator, Gate
from ctrail.console.config import ConsoleConfig
from ctrail.console.data import ConsoleData
from ctrail.console.pages import build_pages
from ctrail.console.users import ConsoleDb
from ctrail.errors import ConfigError, QueryError, UsageError
from ctrail.runtime.signals import stop_on
from ctrail.settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings, store: Store, db: ConsoleDb,
               config: ConsoleConfig | None = None, config_path: Path | None = None) -> FastAPI:
    config = config or settings.console or ConsoleConfig()
    auth = Authenticator(db, config, settings)
    data = ConsoleData(settings, store, db, config_path)
    app = FastAPI(title="ContainerTrail console", version=__version__, docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.include_router(build_router(data, auth))
    app.include_router(build_pages(data, auth))
    static = resources.files("ctrail.console") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    app.add_middleware(Gate, auth=auth)

    @app.get("/api/openapi.json", include_in_schema=False)
    def openapi() -> dict[str, Any]:
        return app.openapi()

    @app.exception_handler(QueryError)
    @app.exception_handler(UsageError)
    async def bad_request(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # What was wrong and where, never the value sent: FastAPI's own answer echoes it (a
        # password, in a malformed login) and fails with a 500 on bytes that are not UTF-8.
        errors = [{"type": e.get("type"), "loc": list(e.get("loc", ())), "msg": e.get("msg")}
                  for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    return app


class ConsoleServer:
    """The console served by uvicorn in a thread of its own (`ctrail run` with `console:`),
    or in the foreground (`ctrail console`)."""

    def __init__(self, settings: Settings, config: ConsoleConfig,
                 config_path: Path | None = None) -> None:
        config.check_tls()
        self.store = settings.store.build(settings.data_dir)
        self.db = ConsoleDb(settings.data_dir)
        app = create_app(settings, self.store, self.db, config, config_path)
        self.server = uvicorn.Server(uvicorn.Config(
            app, host=config.host, port=config.port, log_level="warning", access_log=False,
            ssl_certfile=config.tls_cert_file, ssl_keyfile=config.tls_key_file,
            timeout_graceful_shutdown=3, server_header=False))
        self.config = config
        self._thread: threading.Thread | None = None

    def serve(self) -> None:
        """Serve until SIGINT or SIGTERM, then stop cleanly (exit status 0, as `ctrail run`):
        the server runs in a thread, so the signals are ours, not uvicorn's."""
        stop = threading.Event()
        stop_on((signal.SIGINT, signal.SIGTERM), stop)
        self.start()
        try:
            while not stop.wait(1.0):
                if self._thread is not None and not self._thread.is_alive():
                    raise ConfigError("console: the server stopped unexpectedly")
        finally:
            self.stop()

    def start(self, timeout_secs: float = 30.0) -> None:
        """Serve in a thread (uvicorn leaves signals to the caller there); return once it
        listens, ConfigError when it cannot."""
        self._thread = threading.Thread(target=self.server.run, name="console", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_secs
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.close()
                raise ConfigError(f"console: cannot listen on {self.config.host}:"
                                  f"{self.config.port}")
            time.sleep(0.02)
        self._log_start()

    @property
    def url(self) -> str:
        """Where it listens (the port the system chose when port is 0)."""
        servers = getattr(self.server, "servers", None)     # set once it listens
        port = servers[0].sockets[0].getsockname()[1] if servers else self.config.port
        scheme = "https" if self.config.tls else "http"
        return f"{scheme}://{self.config.host}:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.close()

    def close(self) -> None:
        self.store.close()
        self.db.close()

    def _log_start(self) -> None:
        log.info("The console is serving.", extra={"url": self.url + "/"})
