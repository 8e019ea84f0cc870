"""The one way activities leave the importer: batches to the gateway's POST /v1/activities.

The gateway validates, refuses erased people's activities and publishes each one with the
event id of live traffic (`derive_event_id("activity", source, activity_id)`). A batch is
all-or-nothing there; here a 422 problem's JSON pointers (`/activities/3/...`) name the bad
items, which are reported and left out, and the rest of the batch is sent again. 503 and 429
(and transport errors) are retried with exponential back-off, honouring Retry-After.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

RETRY_STATUSES = frozenset({429, 502, 503, 504})
POINTER = re.compile(r"^/activities/(\d+)(/.*)?$")


class SendError(Exception):
    """The gateway refused the batch for a reason no retry fixes (auth, a non-item problem)."""


@dataclass
class Sent:
    """The outcome of one batch: which items (by index) the gateway refused, and why."""

    rejected: dict[int, list[str]] = field(default_factory=dict)
    retries: int = 0


class GatewaySender:
    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        api_key: str | None = None,
        max_attempts: int = 8,
        initial_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
    ) -> None:
        self.client = client
        self.headers = {"content-type": "application/json"}
        if api_key:
            self.headers["authorization"] = f"Bearer {api_key}"
        self.max_attempts = max_attempts
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s

    async def send(self, encoded: Sequence[bytes]) -> Sent:
        """Send activities (each already JSON) until every one is accepted or refused."""
        result = Sent()
        remaining = list(range(len(encoded)))
        while remaining:
            body = b'{"activities":[' + b",".join(encoded[i] for i in remaining) + b"]}"
            response = await self._post(body, result)
            if response.status_code in (200, 202):
                return result
            problem = _json(response)
            if response.status_code == 413 and len(remaining) > 1:
                half = len(remaining) // 2  # too large: send the halves
                for part in (remaining[:half], remaining[half:]):
                    sub = await self.send([encoded[i] for i in part])
                    for j, why in sub.rejected.items():
                        result.rejected[part[j]] = why
                    result.retries += sub.retries
                return result
            bad = _bad_items(problem)
            if response.status_code in (400, 413, 422) and bad:
                for index, why in bad.items():
                    if 0 <= index < len(remaining):
                        result.rejected.setdefault(remaining[index], []).extend(why)
                remaining = [i for j, i in enumerate(remaining) if j not in bad]
                continue
            detail = problem.get("detail") if isinstance(problem, dict) else None
            raise SendError(
                f"the gateway answered {response.status_code}: {detail or response.text[:300]}"
            )
        return result

    async def _post(self, body: bytes, result: Sent) -> httpx.Response:
        delay = self.initial_backoff_s
        for attempt in range(1, self.max_attempts + 1):
            try:
                response = await self.client.post(
                    "/v1/activities", content=body, headers=self.headers
                )
            except httpx.TransportError as exc:
                if attempt == self.max_attempts:
                    raise SendError(f"the gateway is unreachable: {exc!r}") from exc
            else:
                if response.status_code not in RETRY_STATUSES or attempt == self.max_attempts:
                    return response
                delay = max(delay, _retry_after(response))
            result.retries += 1
            await asyncio.sleep(min(delay, self.max_backoff_s))
            delay = min(delay * 2, self.max_backoff_s)
        raise AssertionError("unreachable")


def _json(response: httpx.Response) -> Any:
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None


def _retry_after(response: httpx.Response) -> float:
    try:
        return float(response.headers.get("retry-after", "0"))
    except ValueError:
        return 0.0


def _bad_items(problem: Any) -> dict[int, list[str]]:
    """Item index -> what is wrong with it, from a problem's `errors` pointers."""
    found: dict[int, list[str]] = {}
    errors = problem.get("errors") if isinstance(problem, dict) else None
    for error in errors or []:
        match = POINTER.match(str(error.get("pointer", ""))) if isinstance(error, dict) else None
        if match:
            found.setdefault(int(match.group(1)), []).append(
                f"{match.group(2) or '/'}: {error.get('detail', '')}"
            )
    return found
