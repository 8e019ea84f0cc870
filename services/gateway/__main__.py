"""`python -m services.gateway`: the HTTP gateway and its journey read model, under uvicorn."""

from __future__ import annotations

import importlib.util

import uvicorn

from services.gateway.runtime import build_app
from shared.logs import configure_logging
from shared.settings import Settings


def main() -> None:
    settings = Settings()
    configure_logging("gateway", settings.log_level, settings.log_format)
    uvicorn.run(
        build_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        log_config=None,  # keep configure_logging's handlers and format
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
        server_header=False,
    )


if __name__ == "__main__":
    main()
