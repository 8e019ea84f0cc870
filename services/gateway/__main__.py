"""`python -m services.gateway`: the HTTP gateway and its journey read model, under uvicorn."""

from __future__ import annotations

import contextlib
import importlib.util
import signal
from collections.abc import Iterator

import uvicorn

from services.gateway.bootstrap import build_app
from shared.logs import configure_logging
from shared.settings import Settings


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM after its graceful shutdown, so the process dies of the
    signal (exit -15). A shutdown the orchestrator asked for and that went well exits 0."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.handle_exit)
        yield


def main() -> None:
    settings = Settings()
    configure_logging("gateway", settings.log_level, settings.log_format)
    config = uvicorn.Config(
        build_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        log_config=None,  # keep configure_logging's handlers and format
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
        server_header=False,
    )
    _Server(config).run()


if __name__ == "__main__":
    main()
