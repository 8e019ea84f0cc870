"""Flywheel figures: does the community turn people into advocates who bring the next people in?

The read model keeps a few facts besides the journey transitions (referral acquisitions, peer
help, questions asked, churn-risk signals), each from the event that states it, and
`GET /v1/flywheel?from=&to=` computes the figures over an event-time window. Formulas are in
each field's description (and so in the OpenAPI document).

`rules` is pure (the funnel, what a question is), `store` the SQL (facts in, figures out, its
part of a merge and an erasure), `routes` the endpoint, `models` its body.
"""

from services.gateway.flywheel.routes import router
from services.gateway.flywheel.rules import is_question
from services.gateway.flywheel.store import flywheel_report, project_facts

__all__ = ["flywheel_report", "is_question", "project_facts", "router"]
