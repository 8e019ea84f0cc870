"""Every operational knob of every service, read from the environment in one place.

Each process builds one `Settings()`; a service only reads the fields it needs. Variables use
the `FLYWHEEL_` prefix, except the Kafka bootstrap servers, which also honour the conventional
`KAFKA_BOOTSTRAP_SERVERS`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, NonNegativeInt, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_", extra="ignore", frozen=True)

    # --- where things are -------------------------------------------------------------------
    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        validation_alias=AliasChoices(
            "KAFKA_BOOTSTRAP_SERVERS", "FLYWHEEL_KAFKA_BOOTSTRAP_SERVERS"
        ),
        description="Comma-separated host:port list of the Kafka brokers.",
    )
    database_url: str = Field(
        default="postgresql://flywheel@127.0.0.1:5432/flywheel",
        repr=False,  # it may hold a password: never in a repr, a log line or an error
        description="This service's own PostgreSQL database (never another service's). A "
        "secret when it holds a password: logged only through `shared.postgres.redact`.",
    )

    # --- Kafka security (docs/SECURITY.md) -----------------------------------------------------
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT",
        description="How every Kafka client of this process (producers, consumers, admin) "
        "connects: `SASL_SSL` for MSK, Confluent Cloud, Aiven or an authenticated Strimzi; "
        "`SSL` for TLS (with a client certificate: mTLS); `PLAINTEXT` only on a trusted network.",
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "SCRAM-SHA-512",
        description="SASL mechanism with `SASL_*` protocols. PLAIN sends the password itself, "
        "so only over `SASL_SSL`.",
    )
    kafka_sasl_username: str | None = Field(
        None,
        description="This process's Kafka principal (`User:<name>`): each service its own, the "
        "name `flywheel acls` grants to (the service name by default).",
    )
    kafka_sasl_password: SecretStr | None = Field(
        None, description="The principal's SASL password (never logged)."
    )
    kafka_ssl_cafile: Path | None = Field(
        None,
        description="PEM file of the CA(s) that signed the brokers' certificates; unset: the "
        "system's trust store.",
    )
    kafka_ssl_certfile: Path | None = Field(
        None, description="PEM client certificate (chain) for mutual TLS."
    )
    kafka_ssl_keyfile: Path | None = Field(
        None, description="PEM private key of that certificate (default: in the certfile)."
    )
    kafka_ssl_key_password: SecretStr | None = Field(
        None, description="Password of an encrypted private key (never logged)."
    )

    # --- consuming ----------------------------------------------------------------------------
    consumer_max_records: int = Field(
        2000,
        ge=1,
        description="Most records in one batch (live traffic batches what has arrived; a "
        "catch-up or replay pays the transaction, fsync and offset commit once per this many).",
    )
    consumer_overlap: bool = Field(
        True,
        description="Fetch and decode the next batch while this one's transaction and offset "
        "commit run (one transaction at a time either way, in the order read; offsets "
        "committed only after it). Off: batches one after the other (docs/PERFORMANCE.md).",
    )
    consumer_batch_timeout_ms: int = Field(
        100, ge=1, description="Longest wait for a batch to fill before it is processed."
    )
    consumer_auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="Where a new consumer group starts: the whole log, or its end."
    )
    instance_id: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9._\-]+$",
        description="This replica's name in its consumer groups (Kafka static membership): a "
        "replica restarted under the same name takes its partitions back at once, without a "
        "rebalance. Stable per replica and unique among a service's replicas (in Kubernetes, "
        "the pod name); default: the host name. Each consumer group gets it with its own "
        "name appended.",
    )
    handler_max_attempts: int = Field(
        3, ge=1, description="Tries of a record whose handler fails before it is dead-lettered."
    )
    transient_retry_initial_s: float = Field(
        0.2, gt=0, description="First back-off after a transient fault (database, broker)."
    )
    transient_retry_max_s: float = Field(10.0, gt=0, description="Cap of that back-off.")

    # --- producing ----------------------------------------------------------------------------
    outbox_poll_interval_s: float = Field(
        0.05, gt=0, description="How often the outbox relay looks for unsent rows when idle."
    )
    outbox_batch_size: int = Field(1000, ge=1, description="Outbox rows published per round.")
    producer_linger_ms: int = Field(
        0,
        ge=0,
        description="How long the producer waits for more records before it sends a batch. "
        "0: every producer of ours (the gateway's publish, the outbox relay) hands a whole "
        "request or round to the producer at once, so its records are batched without a wait; "
        "a linger only delays them (docs/PERFORMANCE.md, fifth round).",
    )

    # --- topics (used when the stack creates them) --------------------------------------------
    topic_prefix: str = Field(
        "",
        pattern=r"^[A-Za-z0-9._\-]*$",
        description="Namespace for every topic name (e.g. `staging.`): lets several "
        "deployments, or test runs, share one Kafka cluster. Consumer groups get it too.",
    )
    topic_partitions: int = Field(6, ge=1, description="Partitions of each keyed topic.")
    topic_replication_factor: int = Field(
        1, ge=1, description="Replicas of each topic the stack creates (3 in production)."
    )

    # --- event time and rules -------------------------------------------------------------
    allowed_lateness_s: float = Field(
        3600.0,
        ge=0,
        description="How far behind the newest event time of its partition an event may arrive "
        "and still be judged on time: a service's clock is the slowest partition's newest event "
        "time minus this.",
    )
    idle_partition_s: float = Field(
        30.0,
        gt=0,
        description="A partition read to its log end that has not grown for this long (wall "
        "clock) is idle: it no longer holds its service's event-time clock back, until its next "
        "record (docs/GUARANTEES.md, Event time).",
    )
    max_future_s: float = Field(
        300.0,
        ge=0,
        description="How far ahead an occurred_at may be: of the gateway's clock (else 422), of "
        "a webhook's receipt (else clamped to it and flagged), of the Kafka record's timestamp "
        "(else dead-lettered by the stage services).",
    )
    rules_file: Path | None = Field(
        None,
        description="TOML file with [awareness], [engagement], [advocacy] sections overriding "
        "the journey model's defaults (docs/JOURNEY-MODEL.md lists every key).",
    )

    # --- HTTP ---------------------------------------------------------------------------------
    http_host: str = Field("127.0.0.1", description="Interface the HTTP endpoints listen on.")
    http_port: int = Field(8080, description="Gateway API port.")
    gateway_role: Literal["all", "api", "read-model"] = Field(
        "all",
        description="What a gateway process runs. all: the API and its read model's consumer "
        "in one process; api: the API (with ingest, webhooks and the outbound fan-out) without "
        "the read model; read-model: only the read model's consumer, health on "
        "FLYWHEEL_HEALTH_PORT. Apart, each scales on its own; that pays only where the read "
        "model has CPU of its own (docs/OPERATIONS.md).",
    )
    health_port: int = Field(
        0,
        ge=0,
        description="Port of a stage service's (or a read-model gateway's) /healthz, /readyz "
        "(0: not served).",
    )
    max_request_bytes: int = Field(1_048_576, ge=1024, description="Largest accepted HTTP body.")
    max_batch_items: int = Field(1000, ge=1, description="Most activities in one POST.")
    publish_timeout_s: float = Field(
        10.0, gt=0, description="Longest a request waits for the broker's acks before a 503."
    )
    clock_tick_interval_s: float = Field(
        60.0,
        ge=0,
        description="How often the gateway publishes a clock tick (wall-clock event time) so "
        "inactivity is judged while the community is quiet; 0 turns it off (replays, demos "
        "on simulated time).",
    )

    # --- the gateway's HTTP edge (docs/SECURITY.md) -------------------------------------------
    inbound_webhook_max_bytes: int = Field(
        4_194_304,
        ge=1024,
        description="Largest accepted body of a platform webhook (POST /v1/webhooks/*); every "
        "other route takes at most FLYWHEEL_MAX_REQUEST_BYTES. Larger: 413 before any "
        "signature or key is checked.",
    )
    http_limit_concurrency: int = Field(
        256,
        ge=1,
        description="Connections and tasks the gateway's HTTP server handles at once; beyond "
        "it new requests get 503 at once (uvicorn limit_concurrency).",
    )
    http_body_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Longest the gateway waits for a request's whole body (it is read before "
        "any route runs); slower: 408.",
    )
    http_keep_alive_s: float = Field(
        5.0, gt=0, description="How long an idle keep-alive connection is kept open."
    )
    http_max_header_bytes: int = Field(
        16_384,
        ge=1024,
        description="Largest request line plus headers the HTTP server buffers (h11 max "
        "incomplete event size); larger: the connection is refused with 400.",
    )
    metrics_port: int = Field(
        9464,
        ge=0,
        description="Port of the gateway's Prometheus /metrics (with /healthz and /readyz), "
        "apart from the public API port; 0: not served. Stage services serve /metrics on "
        "FLYWHEEL_HEALTH_PORT.",
    )
    asyncapi_show_servers: bool = Field(
        False,
        description="Name the Kafka bootstrap servers in /asyncapi.json (which anyone may "
        "read); off: the document names no host.",
    )
    reports_pool_size: int = Field(
        2,
        ge=1,
        description="Database connections of the gateway's reports (/v1/flywheel, journeys, "
        "stages): a pool of their own, so reports never take ingest's or readiness's.",
    )
    reports_acquire_timeout_s: float = Field(
        2.0,
        gt=0,
        description="Longest a report waits for one of those connections before answering "
        "503 with Retry-After.",
    )
    reports_statement_timeout_s: float = Field(
        10.0,
        gt=0,
        description="PostgreSQL statement_timeout of report queries; a report that takes "
        "longer is cancelled and answered 503.",
    )

    # --- access and inbound webhooks (gateway) ------------------------------------------------
    api_keys: SecretStr | None = Field(
        None,
        description="The gateway API's credentials: `;`-separated entries `[name=]key:scope,"
        "scope`, scopes `ingest` (POST /v1/activities), `read` (journeys, stages, flywheel), "
        "`admin` (webhook stats, subscriptions), e.g. `crm=k3y...:read;etl=s3cr3t...:ingest`. "
        "A key is at least 16 characters of `A-Za-z0-9._~+/-`, sent as `Authorization: Bearer "
        "<key>` or `X-API-Key: <key>`; only its SHA-256 is kept in memory. A placeholder "
        "(CHANGE-ME...) or a guessable key stops the gateway at start. Unset: every API "
        "call is refused (401); health, docs and signed webhooks stay open.",
    )
    pseudonym_key: SecretStr | None = Field(
        None,
        description="Key of the pseudonymous member ids the gateway gives platform identities "
        "(`m-...`, HMAC-SHA256), so no platform user id reaches the Kafka logs: a random "
        "string (`python -c 'import secrets; print(secrets.token_urlsafe(32))'`), the same "
        "for every replica, never changed (another key would "
        "give everyone a new id: the gateway refuses to start with one). Unset: generated "
        "once and kept in the gateway's database (docs/SECURITY.md).",
    )
    github_webhook_secret: SecretStr | None = Field(
        None,
        description="Secret of the GitHub webhook (X-Hub-Signature-256); unset: "
        "POST /v1/webhooks/github answers 404.",
    )
    discourse_webhook_secret: SecretStr | None = Field(
        None,
        description="Secret of the Discourse webhook (X-Discourse-Event-Signature); unset: "
        "POST /v1/webhooks/discourse answers 404.",
    )
    slack_signing_secret: SecretStr | None = Field(
        None,
        description="Signing secret of the Slack app (X-Slack-Signature, v0); unset: "
        "POST /v1/webhooks/slack answers 404.",
    )
    inbound_webhook_dedupe_days: int = Field(
        30,
        ge=1,
        description="How long the gateway remembers inbound webhook delivery ids to recognise "
        "redeliveries (GitHub redelivers for 3 days, Slack retries within the hour).",
    )

    # --- the dashboard and the member directory (gateway) -------------------------------------
    dashboard_session_secret: SecretStr | None = Field(
        None,
        description="Key (at least 32 characters) that signs the dashboard's session cookies "
        "(HMAC-SHA256); every gateway replica needs the same one. Unset: a random key per "
        "process, so sessions end when the gateway restarts and do not carry across replicas.",
    )
    dashboard_session_ttl_s: float = Field(
        28800.0,
        gt=0,
        description="How long a dashboard login lasts before the API key must be entered again.",
    )
    directory_recent_activities: int = Field(
        20,
        ge=1,
        le=1000,
        description="Activities kept per member in the read model for the profile's recent "
        "activity (the oldest beyond this are deleted as new ones arrive).",
    )

    # --- outbound webhooks (gateway) ----------------------------------------------------------
    webhook_retry_initial_s: float = Field(
        1.0, gt=0, description="Cap of the first random back-off after a failed webhook delivery."
    )
    webhook_retry_max_s: float = Field(
        3600.0,
        gt=0,
        description="Largest cap of the back-off between webhook attempts (it doubles per "
        "attempt up to this; full jitter).",
    )
    webhook_give_up_after_s: float = Field(
        86400.0,
        gt=0,
        description="A webhook delivery still failing this long after it was queued is dead "
        "(kept, listed, replayable).",
    )
    webhook_timeout_s: float = Field(
        10.0, gt=0, description="Longest wait for a webhook receiver's answer to one attempt."
    )
    webhook_max_in_flight: int = Field(
        16, ge=1, description="Webhook requests one gateway replica has open at once."
    )
    webhook_poll_interval_s: float = Field(
        1.0,
        gt=0,
        description="How often the webhook sender looks for due retries when nothing woke it.",
    )
    webhook_log_retention_days: float = Field(
        30.0,
        gt=0,
        description="How long delivered and dead webhook deliveries (and their attempt log) "
        "are kept, listable and replayable.",
    )

    webhook_allow_hosts: str = Field(
        "",
        description="Comma-separated host names, IP addresses or CIDR networks outbound webhooks "
        "may reach although they are not public (loopback, private, link-local...): local "
        "receivers in development and tests. Cloud metadata addresses stay refused.",
    )
    webhook_allow_http: bool = Field(
        False,
        description="Accept plain `http://` subscription URLs, for hosts in "
        "FLYWHEEL_WEBHOOK_ALLOW_HOSTS only; every other URL must be https.",
    )
    secrets_keys: SecretStr | None = Field(
        None,
        description="Comma-separated Fernet keys (`python -c 'from cryptography.fernet import "
        "Fernet; print(Fernet.generate_key().decode())'`) encrypting the outbound webhook "
        "signing secrets in PostgreSQL: the first encrypts, all decrypt; at start the gateway "
        "re-encrypts every secret under the first (rotation: put a new key first, keep the old "
        "one until the gateway started once). Unset: outbound webhooks are off (the "
        "subscriptions API answers 503, nothing is sent).",
    )

    # --- process ------------------------------------------------------------------------------
    shutdown_grace_s: float = Field(
        15.0, gt=0, description="Bound on finishing the batch in hand and flushing at SIGTERM."
    )
    gc_threshold: tuple[NonNegativeInt, NonNegativeInt, NonNegativeInt] = Field(
        (50_000, 20, 100),
        description="Python's garbage-collector thresholds (generations 0, 1, 2), as JSON: "
        "`[700,10,10]` is Python's own, with which a catch-up costs 10-25 % more CPU per "
        "record (shared/runtime.py, docs/OPERATIONS.md).",
    )
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR.")
    log_format: Literal["text", "json"] = Field(
        "text", description="`json` for one JSON object per line (production), `text` to read."
    )

    @model_validator(mode="after")
    def _kafka_security_is_complete(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL_") and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                f"FLYWHEEL_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                "FLYWHEEL_KAFKA_SASL_USERNAME and FLYWHEEL_KAFKA_SASL_PASSWORD"
            )
        if self.kafka_sasl_mechanism == "PLAIN" and self.kafka_security_protocol == (
            "SASL_PLAINTEXT"
        ):
            raise ValueError(
                "SASL PLAIN over SASL_PLAINTEXT would send the password in clear: use SASL_SSL "
                "(or a SCRAM mechanism)"
            )
        if self.kafka_ssl_keyfile and not self.kafka_ssl_certfile:
            raise ValueError("FLYWHEEL_KAFKA_SSL_KEYFILE needs FLYWHEEL_KAFKA_SSL_CERTFILE")
        return self

    def topic(self, logical_name: str) -> str:
        """The name of a registry topic on the broker."""
        return f"{self.topic_prefix}{logical_name}"

    def logical_topic(self, broker_name: str) -> str:
        """The registry name of a topic read from the broker."""
        return broker_name.removeprefix(self.topic_prefix)


def markdown_table() -> str:
    """The configuration table of README.md, generated so that it cannot drift from the code:
    `python -m shared.settings`."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        variable = (
            " or ".join(f"`{a}`" for a in alias.choices)  # type: ignore[union-attr]
            if alias is not None
            else f"`FLYWHEEL_{name.upper()}`"
        )
        default = field.default if field.default not in ("", None) else "-"
        if isinstance(default, tuple):
            default = json.dumps(list(default), separators=(",", ":"))  # as the variable takes it
        rows.append(f"| {variable} | `{default}` | {field.description or ''} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
