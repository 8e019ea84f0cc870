"""The flywheel's pure rules: the funnel it runs on and what counts as a question."""

from __future__ import annotations

from shared.contracts import ActivityV1

# (from dimension, from stage) -> (to dimension, to stages): the funnel the flywheel runs on.
# A visitor converts under its own id as `merged` (it signed up as a member id) or `member`.
FUNNEL: tuple[tuple[tuple[str, str], tuple[str, tuple[str, ...]]], ...] = (
    (("awareness", "visitor"), ("awareness", ("member", "merged"))),
    (("awareness", "member"), ("engagement", ("engaged",))),
    (("engagement", "engaged"), ("advocacy", ("advocate",))),
    (("advocacy", "advocate"), ("advocacy", ("champion",))),
    (("awareness", "member"), ("awareness", ("customer",))),
    (("awareness", "customer"), ("awareness", ("retained",))),
    (("engagement", "at_risk"), ("engagement", ("reactivated",))),
)


def is_question(activity: ActivityV1) -> bool:
    """A thread that asks something: flagged by the source, or a title or text ending in '?'."""
    if activity.kind != "post":
        return False
    if activity.properties.get("question") is True:
        return True
    texts = (
        activity.target.thread_title if activity.target else None,
        activity.properties.get("text"),
    )
    return any(isinstance(t, str) and t.rstrip().endswith("?") for t in texts)


def share(part: int, whole: int) -> float | None:
    """part / whole to four places; None when there is no whole."""
    return round(part / whole, 4) if whole else None
