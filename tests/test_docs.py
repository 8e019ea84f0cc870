"""The docs stay true to the code where the code can say so."""

from __future__ import annotations

from pathlib import Path

from shared.settings import markdown_table

REPO = Path(__file__).resolve().parents[1]


def test_readme_configuration_table_matches_the_settings_class() -> None:
    assert markdown_table() in (REPO / "README.md").read_text(), (
        "README's configuration table is stale: paste `python -m shared.settings` into it"
    )


def test_security_acl_table_matches_the_command() -> None:
    from ops.acls import markdown_table as acl_table

    assert acl_table() in (REPO / "docs" / "SECURITY.md").read_text(), (
        "SECURITY.md's ACL table is stale: paste `flywheel acls --format markdown` into it"
    )


def test_architecture_topic_table_matches_the_registry() -> None:
    from shared.topics import markdown_table as topics_table

    assert topics_table() in (REPO / "docs" / "ARCHITECTURE.md").read_text(), (
        "ARCHITECTURE.md's topic table is stale: paste `python -m shared.topics` into it"
    )
