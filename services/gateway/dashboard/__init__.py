"""The web dashboard for community teams, served by the gateway under /dashboard.

A login trades an API key holding the `read` scope for a signed session cookie (`session`).
The pages (`pages`, rendered on the server) show the funnel and conversion over a chosen
window, weekly stage flows, cohort retention, the peer-answer share over time, health ratios
next to raw counts, an operations strip, the member directory with its filters and CSV
export, member profiles and the leaderboards. Charts are inline SVG drawn by `charts`; the
CSS and the small script ship with the package (`static/`): nothing is fetched from elsewhere.
"""

from __future__ import annotations

from fastapi import FastAPI

from services.gateway.dashboard.routes import LoginRequired, login_redirect, router
from services.gateway.directory.reader import Directory
from shared.settings import Settings


def install(app: FastAPI, directory: Directory, settings: Settings) -> None:
    """The dashboard's routes, and the redirect to its login form for a page without a
    session."""
    app.include_router(router(directory, settings))
    app.add_exception_handler(LoginRequired, login_redirect)


__all__ = ["install"]
