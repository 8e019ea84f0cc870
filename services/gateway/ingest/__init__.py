"""Ingest: community activity in over POST /v1/activities, validated (`intake`), published to
`member-activity` as CloudEvents (`publisher`). Owns no table; the webhooks feature publishes
through the same publisher and validation."""
