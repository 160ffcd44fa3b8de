"""Human durations (`90s`, `10m`, `1h30m`, `7d`) as used in specs."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(value: object) -> timedelta:
    """Parse seconds (int/float), a timedelta, or a string like `1h30m`."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("a duration cannot be a boolean; write e.g. `30m` or `3600`")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("a duration must not be negative")
        return timedelta(seconds=value)
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        if re.fullmatch(r"\d+(\.\d+)?", text):
            return timedelta(seconds=float(text))
        if text and _PART.sub("", text) == "":
            return timedelta(seconds=sum(float(n) * _UNITS[u] for n, u in _PART.findall(text)))
    raise ValueError(f"`{value}` is not a duration; use seconds or a string like `90s`, `10m`, `1h30m`, `7d`")


def format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"
