"""RFC 3339 timestamps, as Compute Engine writes them and as results and try records carry them.

A base module: the cloud providers, the cost of a VM's lifetime and the CLI read and write the same
stamps, and none of them needs the others for it."""

from __future__ import annotations


def epoch_of(stamp: str | None) -> float:
    """Epoch seconds of an RFC 3339 timestamp (Compute Engine writes ``2026-12-01T09:30:12.345-08:00``);
    0.0 for none or one that cannot be read."""
    import datetime as dt

    if not stamp:
        return 0.0
    try:
        return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def rfc3339(epoch: float) -> str:
    """Epoch seconds as an RFC 3339 timestamp in UTC, to the millisecond."""
    import datetime as dt

    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
