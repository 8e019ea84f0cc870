"""History in: a community's past from the platforms' own exports (issue #16).

`flywheel import SOURCE PATH` or `importers.import_export(...)`: Stack Exchange dumps, Slack
workspace exports, Discourse and GitHub API pages, and ActivityV1 as JSONL/CSV, sent in
batches through the gateway's POST /v1/activities, resumable from a checkpoint, with the
activity, member and thread ids the live webhooks give the same items. See docs/IMPORTING.md.
"""

from importers.api import import_export
from importers.items import ExportError
from importers.runner import SOURCES, Summary, run_import

__all__ = ["SOURCES", "ExportError", "Summary", "import_export", "run_import"]
