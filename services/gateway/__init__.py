"""The gateway: community activity in over HTTP (published to `member-activity` as
CloudEvents), and the journey read model out (projected from `journey-transitions`).

`python -m services.gateway` runs it; `runtime.build_app` wires it; `api.create_app` is the
HTTP layer alone, with its collaborators passed in (see `ports.py`).
"""
