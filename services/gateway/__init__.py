"""The gateway: community activity in over HTTP (published to `member-activity` as
CloudEvents), and the journey read model out (projected from `journey-transitions`).

It is built of feature packages, each owning its routes, SQL, models and its part of a merge
and an erasure: `ingest`, `webhooks`, `identity`, `journey`, `flywheel`, `delivery`; `http` is
the plumbing they share; `member_state` composes their parts of merges and erasures;
`bootstrap` wires them (`SPEC`, `create_app`, `build_app`); `python -m services.gateway` runs
it under uvicorn.
"""
