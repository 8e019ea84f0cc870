"""`python -m services.gateway`: the HTTP gateway and its journey read model, under uvicorn;
or one of the two alone (`FLYWHEEL_GATEWAY_ROLE`: `api`, `read-model`)."""

from __future__ import annotations

import contextlib
import importlib.util
import signal
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from services.gateway.bootstrap import build_app, run_read_model
from shared.logs import configure_logging
from shared.runtime import tune_garbage_collector
from shared.settings import Settings


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM after its graceful shutdown, so the process dies of the
    signal (exit -15). A shutdown the orchestrator asked for and that went well exits 0."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.handle_exit)
        yield


def server_config(app: FastAPI, settings: Settings) -> uvicorn.Config:
    """uvicorn, bounded: connections at once, idle keep-alive, header size (docs/SECURITY.md);
    bodies are bounded by the app's own `BodyLimit`."""
    return uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http="h11",  # h11_max_incomplete_event_size applies to h11 only
        log_config=None,  # keep configure_logging's handlers and format
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
        limit_concurrency=settings.http_limit_concurrency,
        timeout_keep_alive=max(1, round(settings.http_keep_alive_s)),
        h11_max_incomplete_event_size=settings.http_max_header_bytes,
        server_header=False,
        date_header=True,
        proxy_headers=False,  # client addresses are not taken from X-Forwarded-For
    )


def main() -> None:
    settings = Settings()
    if settings.gateway_role == "read-model":
        run_read_model()  # no API: the read model's consumer, as a stage service runs
        return
    configure_logging("gateway", settings.log_level, settings.log_format)
    config = server_config(build_app(settings), settings)
    tune_garbage_collector(settings.gc_threshold)
    _Server(config).run()


if __name__ == "__main__":
    main()
