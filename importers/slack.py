"""Slack workspace exports (zip or directory): users.json, channels.json, and per public
channel a JSON file per day (`general/2024-01-31.json`), mapped by the webhook mapper itself.

Messages (with their thread replies, bots' messages included), their reactions and channel
joins are wrapped in the Events API envelopes Slack would have sent (`message`,
`reaction_added`, `member_joined_channel`, `team_join`) and given to `map_slack`: message and
reaction ids are those of the live webhooks by construction. Days are read in order, every
channel's file of a day together and sorted by `ts`: memory is one day of the workspace.

The export has no sign-up time: a person's `signup` is placed at their first appearance in
the export (people never seen are skipped). It has no reaction time either: a reaction is
placed at its message's time. A join's webhook id names Slack's delivery, which the export
does not have: imported joins are named `import-<ts>` and can not match a live one.
"""

from __future__ import annotations

import json
import zipfile
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from importers.items import EPOCH, ExportError, Item, bad, map_delivery, skip
from importers.meter import Meter
from importers.platform import Delivery, map_slack

SOURCE = "slack"


class Export:
    """A directory or a zip, read one file at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.zip = zipfile.ZipFile(path) if path.is_file() else None
        names = (
            [n for n in self.zip.namelist() if not n.endswith("/")]
            if self.zip is not None
            else [str(p.relative_to(path)) for p in path.rglob("*.json")]
        )
        # a zip may hold everything under one top folder
        tops = {PurePosixPath(n).parts[0] for n in names if len(PurePosixPath(n).parts) > 1}
        self.root = ""
        if (
            not any(PurePosixPath(n).name == n and n == "users.json" for n in names)
            and len(tops) == 1
        ):
            top = next(iter(tops))
            if f"{top}/users.json" in names:
                self.root = top + "/"
        self.names = sorted(n[len(self.root) :] for n in names if n.startswith(self.root))

    def size(self, name: str) -> int:
        if self.zip is not None:
            return self.zip.getinfo(self.root + name).file_size
        return (self.path / name).stat().st_size

    def load(self, name: str) -> Any:
        try:
            raw = (
                self.zip.read(self.root + name)
                if self.zip is not None
                else (self.path / name).read_bytes()
            )
            return json.loads(raw)
        except (KeyError, FileNotFoundError):
            raise ExportError(f"{name} is missing from the export") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ExportError(f"{name}: not JSON: {exc}") from None


def _open(path: Path) -> Export:
    if path.is_file() and not zipfile.is_zipfile(path):
        raise ExportError(f"{path}: not a zip file (a Slack export is a zip or its folder)")
    return Export(path)


def check(path: Path) -> list[Path]:
    export = _open(path)
    for name in ("users.json", "channels.json"):
        if name not in export.names:
            raise ExportError(f"{path}: {name} is missing")
        if not isinstance(export.load(name), list):
            raise ExportError(f"{name}: expected a JSON array")
    if path.is_file():
        return [path]
    return [path / n for n in export.names]


def envelope(event: dict[str, Any], at: float) -> dict[str, Any]:
    return {"type": "event_callback", "event": event, "event_time": int(at)}


def _delivery(event: dict[str, Any], ts: float, action: str | None = None) -> Delivery:
    return Delivery(
        SOURCE, str(event["type"]), action, f"import-{ts}", envelope(event, ts), _time(ts)
    )


def _time(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


# --- the mapping core: export messages to Events API payloads, no I/O --------------------------


def message_deliveries(message: dict[str, Any], channel: str) -> list[Delivery] | str:
    """The message itself (or a join), and one `reaction_added` per reacting person."""
    ts = float(message["ts"])
    subtype = message.get("subtype")
    if subtype == "channel_join":
        event = {
            "type": "member_joined_channel",
            "user": message.get("user"),
            "channel": channel,
            "event_ts": message["ts"],
        }
        if message.get("inviter"):
            event["inviter"] = message["inviter"]
        return [_delivery(event, ts)]
    event = {**message, "type": "message", "channel": channel, "channel_type": "channel"}
    event.pop("reactions", None)
    out = [_delivery(event, ts, subtype if isinstance(subtype, str) else None)]
    for reaction in message.get("reactions") or []:
        for user in reaction.get("users") or []:
            out.append(
                _delivery(
                    {
                        "type": "reaction_added",
                        "user": user,
                        "reaction": reaction.get("name"),
                        "item": {"type": "message", "channel": channel, "ts": message["ts"]},
                        "item_user": message.get("user"),
                        "event_ts": message["ts"],
                    },
                    ts,
                )
            )
    return out


def signup_delivery(user: dict[str, Any], ts: float) -> Delivery:
    return _delivery({"type": "team_join", "user": user, "event_ts": str(ts)}, ts)


def _people(message: dict[str, Any]) -> list[str]:
    people = [message["user"]] if isinstance(message.get("user"), str) else []
    for reaction in message.get("reactions") or []:
        people += [u for u in reaction.get("users") or [] if isinstance(u, str)]
    return people


# --- the stream --------------------------------------------------------------------------------


def items(path: Path, meter: Meter, _base_url: str | None = None) -> Iterator[Item]:
    export = _open(path)
    check(path)
    users = {u["id"]: u for u in export.load("users.json") if isinstance(u, dict) and "id" in u}
    channels = {
        c["name"]: c["id"]
        for c in export.load("channels.json")
        if isinstance(c, dict) and "name" in c and "id" in c
    }
    days: defaultdict[str, list[str]] = defaultdict(list)
    for name in export.names:
        parts = PurePosixPath(name).parts
        if len(parts) == 2 and parts[0] in channels and parts[1].endswith(".json"):
            days[parts[1].removesuffix(".json")].append(name)
            meter.plan(export.size(name))
    meter.phase = "importing"
    seen: set[str] = set()
    for day in sorted(days):
        messages: list[tuple[float, int, str, dict[str, Any]]] = []
        for name in sorted(days[day]):
            data = export.load(name)
            meter.advance(export.size(name))
            if not isinstance(data, list):
                yield bad(name, "expected a JSON array of messages")
                continue
            channel = channels[PurePosixPath(name).parts[0]]
            for index, message in enumerate(data):
                where = f"{name}[{index}]"
                try:
                    ts = float(message["ts"])
                except (KeyError, TypeError, ValueError):
                    yield bad(where, "a message without a valid ts")
                    continue
                messages.append((ts, index, name, message))
        messages.sort(key=lambda m: (m[0], m[2], m[1]))
        for ts, index, name, message in messages:
            where = f"{name}[{index}]"
            channel = channels[PurePosixPath(name).parts[0]]
            for person in _people(message):
                if person not in seen:
                    seen.add(person)
                    if person in users:
                        d = signup_delivery(users[person], ts)
                        yield from map_delivery(where, map_slack, d, _time(ts))
            built = message_deliveries(message, channel)
            if isinstance(built, str):
                yield skip(where, built, _time(ts))
                continue
            for d in built:
                yield from map_delivery(where, map_slack, d, _time(ts))
    for user_id in users:
        if user_id not in seen:
            yield skip(
                "users.json", "a person with no activity in the export: no sign-up time", EPOCH
            )
