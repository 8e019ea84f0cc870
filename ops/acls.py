"""`flywheel acls`: the Kafka ACLs each service's principal needs, derived from the code.

Nothing here is written by hand, so the grants cannot drift from what the services do:

- what a service **reads** (Read, Describe on the topic): the topics of its `ServiceSpec`
  (`consumes`) and of its other consumer groups (`other_groups`: the gateway's delivery
  worker);
- what it **writes** (Write, Describe): the topics of the event types it emits
  (`ServiceSpec.emits`, hence `produces`), and the dead-letter topic of each topic it reads
  (dead letters go through its own outbox);
- which **consumer groups** it joins (Read on the group): its `consumer_group` and its other
  groups;
- every name with the deployment's FLYWHEEL_TOPIC_PREFIX, as LITERAL patterns: a service
  gets no topic it does not name.

The idempotent producer needs only Write on the topic from Kafka 3.0 on (KIP-679); for an
older broker, `--legacy-idempotence` adds IdempotentWrite on the cluster. Dead-letter topics
are read by the operator only (`flywheel dlq`), who runs as an admin principal (a super user,
or one with Alter on the cluster to apply these ACLs).

`flywheel acls` prints them (a table, `--format json` or `--format markdown`, the table of
docs/SECURITY.md); `--apply` creates them through the admin protocol (CreateAcls; creating one
that exists changes nothing), and `--prune` also deletes any other ACL naming a service's
principal, so a grant the code no longer needs goes away.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import Enum, StrEnum
from typing import Annotated, Any

import typer

from ops.target import Target, admin_client, bounded, out, run

CLUSTER_RESOURCE = "kafka-cluster"
PRINCIPAL_FORMAT = "User:{service}"


class ResourceType(int, Enum):  # Kafka's org.apache.kafka.common.resource.ResourceType
    ANY = 1
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4


class Operation(int, Enum):  # org.apache.kafka.common.acl.AclOperation
    ANY = 1
    READ = 3
    WRITE = 4
    DESCRIBE = 8
    IDEMPOTENT_WRITE = 12


class PatternType(int, Enum):  # org.apache.kafka.common.resource.PatternType
    ANY = 1
    LITERAL = 3


class Permission(int, Enum):  # org.apache.kafka.common.acl.AclPermissionType
    ANY = 1
    ALLOW = 3


@dataclass(frozen=True, order=True)
class Acl:
    """One ALLOW binding: `principal` may do `operation` on the resource, from any host."""

    service: str
    principal: str
    resource_type: str  # TOPIC, GROUP, CLUSTER
    resource_name: str
    operation: str  # READ, WRITE, DESCRIBE, IDEMPOTENT_WRITE
    pattern_type: str = "LITERAL"
    permission: str = "ALLOW"
    host: str = "*"

    def key(self) -> tuple[str, str, str, str, str, str, str]:
        """What the broker stores (the service is only a label)."""
        return (
            self.principal,
            self.resource_type,
            self.resource_name,
            self.operation,
            self.pattern_type,
            self.permission,
            self.host,
        )


@dataclass(frozen=True)
class Grant:
    """A service's grants, in the terms of the table."""

    service: str
    principal: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    groups: tuple[str, ...]


def _unique(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


def grants(prefix: str = "", principal_format: str = PRINCIPAL_FORMAT) -> list[Grant]:
    """Each service's grants, from services.registry (specs) and shared.topics (names)."""
    from services import registry

    found: list[Grant] = []
    for name, spec in registry.specs().items():
        consumers = ((spec.consumer_group, spec.consumes), *spec.other_groups)
        read = _unique(t.name for _, topics in consumers for t in topics)
        written = _unique([*(t.name for t in spec.produces), *(f"{t}.dlq" for t in read)])
        found.append(
            Grant(
                service=name,
                principal=principal_format.format(service=name),
                reads=tuple(prefix + t for t in read),
                writes=tuple(prefix + t for t in written),
                groups=_unique(prefix + group for group, _ in consumers),
            )
        )
    return found


def required_acls(
    prefix: str = "",
    *,
    principal_format: str = PRINCIPAL_FORMAT,
    legacy_idempotence: bool = False,
) -> list[Acl]:
    """Every ACL binding the services need, each once."""
    acls: dict[tuple[str, ...], Acl] = {}

    def add(grant: Grant, resource_type: str, resource: str, operation: str) -> None:
        acl = Acl(grant.service, grant.principal, resource_type, resource, operation)
        acls.setdefault(acl.key(), acl)

    for grant in grants(prefix, principal_format):
        for topic in grant.reads:
            add(grant, "TOPIC", topic, "READ")
            add(grant, "TOPIC", topic, "DESCRIBE")
        for topic in grant.writes:
            add(grant, "TOPIC", topic, "WRITE")
            add(grant, "TOPIC", topic, "DESCRIBE")
        for group in grant.groups:
            add(grant, "GROUP", group, "READ")
        if legacy_idempotence:
            add(grant, "CLUSTER", CLUSTER_RESOURCE, "IDEMPOTENT_WRITE")
    return list(acls.values())


def markdown_table(prefix: str = "", principal_format: str = PRINCIPAL_FORMAT) -> str:
    """The ACL table of docs/SECURITY.md: `flywheel acls --format markdown`."""

    def names(items: Sequence[str]) -> str:
        return ", ".join(f"`{n}`" for n in items)

    rows = [
        "| principal | reads (Read, Describe) | writes (Write, Describe) "
        "| consumer groups (Read) |",
        "| --- | --- | --- | --- |",
    ]
    for g in grants(prefix, principal_format):
        rows.append(f"| `{g.principal}` | {names(g.reads)} | {names(g.writes)} | "
                    f"{names(g.groups)} |")  # fmt: skip
    return "\n".join(rows)


# --- the admin protocol ------------------------------------------------------------------------


class AclError(Exception):
    """The broker refused an ACL request (e.g. the principal may not alter the cluster)."""


def _raise_for(code: int, message: str | None, what: str) -> None:
    if code:
        from aiokafka.errors import for_code

        error = for_code(code)
        raise AclError(f"{what}: {error.__name__}{': ' + message if message else ''}")


async def _send(admin: Any, request: Any) -> Any:
    client = admin._client  # aiokafka's admin client has no ACL methods; its protocol does
    return await client.send(client.get_random_node(), request)


async def create_acls(admin: Any, acls: Iterable[Acl]) -> int:
    """CreateAcls for each binding (existing ones are left as they are); how many were sent."""
    from aiokafka.protocol.admin import CreateAclsRequest

    sent = 0
    for acl in acls:
        response = await _send(
            admin,
            CreateAclsRequest(
                resource_type=ResourceType[acl.resource_type].value,
                resource_name=acl.resource_name,
                resource_pattern_type_filter=PatternType[acl.pattern_type].value,
                principal=acl.principal,
                host=acl.host,
                operation=Operation[acl.operation].value,
                permission_type=Permission[acl.permission].value,
            ),
        )
        for code, message in response.creation_responses:
            _raise_for(code, message, f"creating {acl.principal} {acl.operation} on "
                       f"{acl.resource_type} {acl.resource_name}")  # fmt: skip
        sent += 1
    return sent


async def describe_acls(admin: Any, principal: str) -> list[tuple[str, str, str, str, str]]:
    """The ALLOW and DENY bindings naming `principal`, as (resource type, resource name,
    pattern type, operation, permission) with Kafka's names."""
    from aiokafka.protocol.admin import DescribeAclsRequest

    response = await _send(
        admin,
        DescribeAclsRequest(
            resource_type=ResourceType.ANY.value,
            resource_name=None,  # null: any
            resource_pattern_type_filter=PatternType.ANY.value,
            principal=principal,
            host=None,
            operation=Operation.ANY.value,
            permission_type=Permission.ANY.value,
        ),
    )
    _raise_for(response.error_code, response.error_message, f"describing ACLs of {principal}")
    types = {t.value: t.name for t in ResourceType}
    operations = {o.value: o.name for o in Operation}
    patterns = {p.value: p.name for p in PatternType}
    found = []
    for resource in response.resources:
        resource_type, resource_name, pattern_type, bindings = resource
        for _principal, _host, operation, permission in bindings:
            found.append(
                (
                    types.get(resource_type, str(resource_type)),
                    resource_name,
                    patterns.get(pattern_type, str(pattern_type)),
                    operations.get(operation, str(operation)),
                    "ALLOW" if permission == Permission.ALLOW.value else "DENY",
                )
            )
    return found


async def delete_acl(admin: Any, principal: str, binding: tuple[str, str, str, str, str]) -> None:
    from aiokafka.protocol.admin import DeleteAclsRequest

    resource_type, resource_name, pattern_type, operation, permission = binding
    response = await _send(
        admin,
        DeleteAclsRequest(
            resource_type=ResourceType[resource_type].value,
            resource_name=resource_name,
            resource_pattern_type_filter=PatternType[pattern_type].value,
            principal=principal,
            host=None,
            operation=Operation[operation].value,
            permission_type=Permission.ALLOW.value if permission == "ALLOW" else 2,
        ),
    )
    for result in response.filter_responses:
        _raise_for(result[0], result[1], f"deleting {principal} {binding}")


async def apply_acls(
    bootstrap: str,
    security: Mapping[str, Any],
    acls: Sequence[Acl],
    *,
    prune: bool = False,
) -> list[tuple[str, tuple[str, str, str, str, str]]]:
    """Create `acls` as an admin principal; with `prune`, delete every other binding of the
    same principals. Returns what was (or, without prune, would be) pruned."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="flywheel-acls", **security)
    await admin.start()
    try:
        return await _apply(admin, acls, prune=prune)
    finally:
        await admin.close()


async def _apply(
    admin: Any, acls: Sequence[Acl], *, prune: bool
) -> list[tuple[str, tuple[str, str, str, str, str]]]:
    await create_acls(admin, acls)
    wanted = {
        (a.principal, (a.resource_type, a.resource_name, a.pattern_type, a.operation, a.permission))
        for a in acls
    }
    stale = []
    for principal in sorted({a.principal for a in acls}):
        for binding in await describe_acls(admin, principal):
            if (principal, binding) not in wanted:
                stale.append((principal, binding))
    if prune:
        for principal, binding in stale:
            await delete_acl(admin, principal, binding)
    return stale


# --- the command ------------------------------------------------------------------------------


class Format(StrEnum):
    table = "table"
    json = "json"
    markdown = "markdown"


def acls(
    format: Annotated[Format, typer.Option("--format", help="table, json or markdown.")] = (
        Format.table
    ),
    apply: Annotated[
        bool, typer.Option("--apply", help="Create them on the cluster (as an admin principal).")
    ] = False,
    prune: Annotated[
        bool,
        typer.Option("--prune", help="With --apply: delete the services' other ACLs."),
    ] = False,
    principal_format: Annotated[
        str,
        typer.Option(
            "--principal-format",
            help="Each service's principal, `{service}` replaced by its name.",
        ),
    ] = PRINCIPAL_FORMAT,
    legacy_idempotence: Annotated[
        bool,
        typer.Option(
            "--legacy-idempotence",
            help="Also IdempotentWrite on the cluster (brokers older than Kafka 3.0).",
        ),
    ] = False,
) -> None:
    """The Kafka ACLs each service's principal needs, derived from the code: print or apply."""
    import os

    if "{service}" not in principal_format:
        raise typer.BadParameter("must contain {service}", param_hint="--principal-format")
    prefix = os.environ.get("FLYWHEEL_TOPIC_PREFIX", "")
    wanted = required_acls(
        prefix, principal_format=principal_format, legacy_idempotence=legacy_idempotence
    )
    if not apply:
        if format is Format.json:
            out.print_json(json.dumps([asdict(a) for a in wanted]))
        elif format is Format.markdown:
            print(markdown_table(prefix, principal_format))
        else:
            _print_table(wanted)
        return

    async def work(target: Target) -> None:
        admin = await admin_client(target)
        try:
            stale = await bounded(
                target, f"Kafka at {target.kafka}", _apply(admin, wanted, prune=prune)
            )
        finally:
            await admin.close()
        out.print(f"applied {len(wanted)} ACL bindings for {len({a.principal for a in wanted})} "
                  "principals")  # fmt: skip
        for principal, binding in stale:
            verb = "deleted" if prune else "not derived from the code (--prune deletes it)"
            out.print(f"  {principal} {' '.join(binding)}: {verb}")

    run(work)


def _print_table(wanted: Sequence[Acl]) -> None:
    from rich.table import Table

    table = Table()
    for column in ("principal", "resource", "name", "operations"):
        table.add_column(column)
    rows: dict[tuple[str, str, str], list[str]] = {}
    for acl in wanted:
        rows.setdefault((acl.principal, acl.resource_type, acl.resource_name), []).append(
            acl.operation
        )
    for (principal, resource_type, name), operations in rows.items():
        table.add_row(principal, resource_type, name, ", ".join(operations))
    out.print(table)
