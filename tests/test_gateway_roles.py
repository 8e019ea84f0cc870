"""The gateway split in two processes (`FLYWHEEL_GATEWAY_ROLE`), as deployed: an API process
that runs no read model, and a read-model process that runs nothing else, on one database,
with the three stage services, a real broker and a real PostgreSQL.

What the split must keep: everything posted to the API reaches the journey API through the
other process, the API process never joins the read model's consumer group (else the two
would share its partitions and each apply part of the log), and both stop cleanly on SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from devstack.common import free_ports
from services.gateway.bootstrap import SPEC as GATEWAY
from services.gateway.bootstrap import build_app
from shared.settings import Settings
from tests.conftest import REPO, Namespace, publish_tick, read_topic, wait_for_journeys
from tests.factories import T0, helped_threads

pytestmark = pytest.mark.integration

STAGES = ("awareness", "engagement", "advocacy")
API_KEY = "gateway-roles-key-0123456789"


def test_a_read_model_process_serves_no_api() -> None:
    with pytest.raises(ValueError, match="FLYWHEEL_GATEWAY_ROLE=read-model runs no API"):
        build_app(Settings(gateway_role="read-model"))


def test_an_unknown_role_is_refused_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="'all', 'api' or 'read-model'"):
        Settings(gateway_role="everything")


@pytest.fixture
async def split(namespace: Namespace, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """The stage services and the gateway's API (role api) as DevStack processes; the
    read-model process is the test's to start, so it can look before and after."""
    devstack = namespace.stack.devstack
    urls = {name: await namespace.create_database(name) for name in (*STAGES, "gateway")}
    for name in STAGES:
        await asyncio.to_thread(devstack.start_service, name, namespace.env(urls[name]))
    api_env = namespace.env(
        urls["gateway"],
        FLYWHEEL_CLOCK_TICK_INTERVAL_S="0",
        FLYWHEEL_API_KEYS=f"roles={API_KEY}:ingest,read",
        FLYWHEEL_GATEWAY_ROLE="api",
    )
    await asyncio.to_thread(devstack.start_service, "gateway", api_env)
    health_port = free_ports(1)[0]
    read_model_env = {
        **namespace.env(urls["gateway"]),
        "FLYWHEEL_GATEWAY_ROLE": "read-model",
        "FLYWHEEL_HEALTH_PORT": str(health_port),
        "PYTHONUNBUFFERED": "1",
    }
    log_path = tmp_path / "gateway-read-model.log"
    procs: list[asyncio.subprocess.Process] = []

    async def start_read_model() -> asyncio.subprocess.Process:
        with open(log_path, "ab") as log:  # noqa: ASYNC230 - a local file, opened once
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "services.gateway",
                cwd=REPO,
                env=read_model_env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
        procs.append(proc)
        await _wait_ready(proc, f"http://127.0.0.1:{health_port}/readyz", log_path)
        return proc

    try:
        yield {
            "gateway": devstack.endpoints.gateway_url,
            "start_read_model": start_read_model,
            "log": log_path,
        }
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                await asyncio.wait_for(proc.wait(), 30)
        services = (*STAGES, "gateway")
        codes = {name: await asyncio.to_thread(devstack.stop_service, name) for name in services}
        assert codes == dict.fromkeys(services, 0), f"a service did not stop cleanly: {codes}"


def _text(path: Path) -> str:
    return path.read_text(errors="replace")


async def _wait_ready(proc: asyncio.subprocess.Process, url: str, log: Path) -> None:
    deadline = asyncio.get_running_loop().time() + 120
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            if proc.returncode is not None:
                raise AssertionError(f"read model exited with {proc.returncode}:\n{_text(log)}")
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"read model not ready at {url}:\n{_text(log)}")
            await asyncio.sleep(0.2)


async def _group_members(namespace: Namespace) -> list[str]:
    """Client ids of the read model's consumer group's members (empty: nobody consumes)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=namespace.stack.kafka_bootstrap, **namespace.stack.security
    )
    await admin.start()
    try:
        responses = await admin.describe_consumer_groups(
            [namespace.prefix + GATEWAY.consumer_group]
        )
    finally:
        await admin.close()
    # each group: (error, group id, state, protocol type, protocol, members); each member:
    # (member id, client id, ...)
    return [str(m[1]) for r in responses for group in r.groups for m in group[5]]


async def test_the_read_model_runs_apart_from_the_api(
    namespace: Namespace, split: dict[str, Any]
) -> None:
    log = helped_threads()
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=split["gateway"], timeout=30, headers=headers) as client:
        body = {"activities": [a.model_dump(mode="json") for a in log]}
        response = await client.post("/v1/activities", json=body)
        assert response.status_code == 202, response.text
        await publish_tick(namespace, T0 + timedelta(days=6))

        # the stages moved, and the API process applied none of it: no read model in it
        await read_topic(namespace, "journey-transitions", until=4)
        assert (await client.get("/v1/members/bob/journey")).status_code == 404
        assert await _group_members(namespace) == []

        read_model = await split["start_read_model"]()
        assert await _group_members(namespace) == ["flywheel-gateway"]
        journeys = await wait_for_journeys(
            client,
            {
                "ada": {"awareness": "member"},
                "bob": {"engagement": "engaged", "advocacy": "advocate"},
            },
        )
        assert journeys["ada"]["stages"]["awareness"]["stage"] == "member"
        assert journeys["bob"]["stages"]["engagement"]["stage"] == "engaged"
        assert journeys["bob"]["stages"]["advocacy"]["stage"] == "advocate"

    read_model.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(read_model.wait(), 30) == 0, _text(split["log"])
