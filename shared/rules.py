"""Loading a stage's rules: defaults live in the service's domain.py, a deployment overrides
them in one TOML file (`FLYWHEEL_RULES_FILE`), and a wrong value stops start-up with a message
that names the file, the section and the key."""

from __future__ import annotations

import tomllib
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from shared.settings import Settings

R = TypeVar("R")


class RulesError(ValueError):
    pass


def load_rules(rules_type: type[R], section: str, settings: Settings | None = None) -> R:
    settings = settings or Settings()
    data: dict[str, Any] = {}
    where = "defaults"
    if settings.rules_file is not None:
        where = f"{settings.rules_file} [{section}]"
        try:
            with settings.rules_file.open("rb") as handle:
                data = tomllib.load(handle).get(section, {})
        except FileNotFoundError:
            raise RulesError(f"rules file {settings.rules_file} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise RulesError(f"rules file {settings.rules_file} is not valid TOML: {exc}") from None
    try:
        return TypeAdapter(rules_type).validate_python(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        raise RulesError(f"invalid journey rules in {where}: {problems}") from None
