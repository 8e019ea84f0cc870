"""What `flywheel replay SERVICE --from-beginning` may truncate: only what the topics rebuild.

The gateway's whole replay is proved against a real broker in
`tests/test_cli.py::test_replaying_the_gateway_rebuilds_its_read_model_and_keeps_the_rest`;
this holds every service's list to the rule without one.
"""

from __future__ import annotations

from services import registry

NEVER = {
    "outbox",  # unsent events: they must still go out
    "schema_migrations",
    "identities",
    "identity_emails",
    "blocked_identities",
    "outbound_subscriptions",
    "outbound_deliveries",
    "outbound_delivery_attempts",
    "webhook_deliveries",
    "webhook_thread_authors",
}


def test_no_service_truncates_what_no_topic_holds() -> None:
    for name, spec in registry.specs().items():
        assert not set(spec.replay_tables) & NEVER, name
        assert "inbox" in spec.replay_tables, f"{name}: a rebuild must apply every event again"


def test_the_stage_services_reset_their_event_time_clock() -> None:
    for name, spec in registry.specs().items():
        if name != "gateway":  # the gateway keeps no event-time clock
            assert {"watermark", "event_clock"} <= set(spec.replay_tables), name
