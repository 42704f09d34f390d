"""Parameters typed as text: the one ``name=value;name=value`` grammar (``;`` or a new
line between assignments, spaces around names and values ignored). What a value means is
the caller's: numbers and lists for model placeholders, Python literals for classifier
hyperparameters."""

from __future__ import annotations

from .errors import InputError


def parse_assignments(text: str | None, what: str, example: str) -> dict[str, str]:
    """``"a=1; b = x"`` -> ``{"a": "1", "b": "x"}``; an assignment without a name or a value
    is one line naming ``what`` and giving ``example``."""
    found: dict[str, str] = {}
    for part in (text or "").replace("\n", ";").split(";"):
        if not part.strip():
            continue
        name, sep, raw = (s.strip() for s in part.partition("="))
        if not sep or not name or not raw:
            raise InputError(f"{what}: {part.strip()!r} is not of the form name=value (e.g. {example})")
        found[name] = raw
    return found
