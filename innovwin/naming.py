"""Naming help for error messages: the one did-you-mean."""
from __future__ import annotations

import difflib


def did_you_mean(name: str, valid) -> str:
    """`` (did you mean 'x'?)`` for the closest valid name, or "" when none is close."""
    close = difflib.get_close_matches(str(name), [str(v) for v in valid], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
