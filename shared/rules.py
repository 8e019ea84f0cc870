"""A stage's rules: declared one way (`@strict_rules`), loaded one way (`load_rules`).

Defaults live in the service's domain.py, a deployment overrides them in one TOML file
(`FLYWHEEL_RULES_FILE`), and a wrong value or an unknown key stops start-up with a message that
names the file, the section and the key: a misspelled key must not be taken and ignored.
"""

from __future__ import annotations

import dataclasses
import tomllib
from typing import Any, TypeVar, cast, dataclass_transform

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass as pydantic_dataclass

from shared.settings import Settings

R = TypeVar("R")

STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)
"""An unknown key is an error, and no number is NaN or infinite."""


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field, Field))
def strict_rules(cls: type[R]) -> type[R]:
    """A frozen dataclass of rules (or of a table inside them, such as advocacy's weights),
    validated by pydantic with `STRICT`: the one way every stage declares its `Rules`."""
    return cast("type[R]", pydantic_dataclass(frozen=True, config=STRICT)(cls))


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
