"""Is a configured secret a real one? The gateway refuses to start with a placeholder
(`CHANGE-ME`, `replace-me`, `example`...) or a guessable value, rather than run with a key
anyone who read the manifests knows.

The estimate is deliberately simple: the length times the Shannon entropy of the
character distribution, in bits. A `secrets.token_urlsafe(32)` scores about 200, a hex
token of 24 bytes about 180; `aaaaaaaaaaaaaaaaaaaa` scores 0 and `abcabcabcabcabcabc` 29.
It does not catch every weak secret (a dictionary phrase of random-looking length passes),
only the ones that are obviously not random.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Final

from shared.settings import Settings

MIN_BITS: Final = 64.0

PLACEHOLDERS: Final = re.compile(
    r"change[-_ ]?me|replace[-_ ]?me|placeholder|example|dummy|insecure|not[-_ ]?a[-_ ]?secret"
    r"|your[-_ ]?(key|secret|token|password)|xxxxx|todo|fixme|<[^>]*>",
    re.IGNORECASE,
)


def entropy_bits(value: str) -> float:
    """Length times the Shannon entropy (bits per character) of its characters."""
    if not value:
        return 0.0
    counts = Counter(value)
    n = len(value)
    per_char = -sum(c / n * math.log2(c / n) for c in counts.values())
    return per_char * n


def weakness(value: str, *, min_bits: float = MIN_BITS) -> str | None:
    """Why this secret must not be used, or None. The reason never repeats the value."""
    if PLACEHOLDERS.search(value):
        return "it is a placeholder (CHANGE-ME, replace-me, example...): set a real secret"
    bits = entropy_bits(value)
    if bits < min_bits:
        return (
            f"it is too guessable (about {bits:.0f} bits, at least {min_bits:.0f} needed): "
            "generate one, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        )
    return None


def placeholder_password(database_url: str) -> bool:
    """Does the database URL carry a placeholder password (the manifests' `CHANGE-ME`)?"""
    match = re.match(r"^[a-z0-9+.-]+://[^/@:]*:([^/@]*)@", database_url, re.IGNORECASE)
    query = re.search(r"[?&]password=([^&#]*)", database_url, re.IGNORECASE)
    passwords = [m.group(1) for m in (match, query) if m is not None]
    return any(PLACEHOLDERS.search(p) for p in passwords)


def check_settings(settings: Settings) -> None:
    """The gateway's start-up check of every secret it is configured with (API keys are
    checked where they are parsed, `auth.ApiKeys`; the Fernet keys in `delivery.vault`): a
    ValueError naming each variable refused and why, never a value."""
    problems: list[str] = []
    for variable, secret in (
        ("FLYWHEEL_GITHUB_WEBHOOK_SECRET", settings.github_webhook_secret),
        ("FLYWHEEL_DISCOURSE_WEBHOOK_SECRET", settings.discourse_webhook_secret),
        ("FLYWHEEL_SLACK_SIGNING_SECRET", settings.slack_signing_secret),
        ("FLYWHEEL_PSEUDONYM_KEY", settings.pseudonym_key),
    ):
        value = secret.get_secret_value() if secret is not None else ""
        if value and (weak := weakness(value)) is not None:
            problems.append(f"{variable} is refused: {weak}")
    if placeholder_password(settings.database_url):
        problems.append(
            "FLYWHEEL_DATABASE_URL is refused: its password is a placeholder (CHANGE-ME...)"
        )
    if problems:
        raise ValueError("; ".join(problems))
