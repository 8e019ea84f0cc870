"""Every service of the backbone, by name: the one list that the operator CLI, the dev stack
and the bench read, so none of them keeps its own copy or picks a spec with if/elif.

Specs are imported on first use: the CLI's `status` should not pay for importing FastAPI.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI's start-up should not pay for FastStream
    from shared.service import ServiceSpec

SPEC_MODULES: dict[str, str] = {
    "awareness": "services.awareness.__main__",
    "engagement": "services.engagement.__main__",
    "advocacy": "services.advocacy.__main__",
    "gateway": "services.gateway.bootstrap",
}
"""Service name -> the module that declares its `SPEC` (what `python -m services.NAME` runs)."""

SERVICE_NAMES: tuple[str, ...] = tuple(SPEC_MODULES)


class UnknownService(KeyError):
    def __str__(self) -> str:
        return f"unknown service {self.args[0]!r}; one of {', '.join(SERVICE_NAMES)}"


def spec(name: str) -> ServiceSpec:
    """The spec of one service; UnknownService names the ones that exist."""
    try:
        module = SPEC_MODULES[name]
    except KeyError:
        raise UnknownService(name) from None
    found: ServiceSpec = import_module(module).SPEC
    return found


def specs() -> dict[str, ServiceSpec]:
    return {name: spec(name) for name in SERVICE_NAMES}
