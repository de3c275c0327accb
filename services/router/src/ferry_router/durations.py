"""Go-style durations: the one parser lives in :mod:`ferry_schemas.durations`."""

from ferry_schemas.durations import parse_duration

__all__ = ["parse_duration"]
