"""Retries for cloud and GitHub calls: 429, 5xx and Compute Engine's 403 rate limits, with backoff
that honours Retry-After.

Compute Engine answers a request over a rate quota with 403 and the reason ``rateLimitExceeded``
(or ``userRateLimitExceeded``), domain ``usageLimits``: "wait a minute then try your request
again" (https://cloud.google.com/compute/api-quota). Any other 403 (a missing permission) is final."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from typing import Any, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

T = TypeVar("T")

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
"""403 reasons that mean "too many requests this minute", not "not allowed"."""


def retry_base_s() -> float:
    """First backoff step in seconds (``GPU_RUNNER_RETRY_BASE_S``, default 2; tests use less)."""
    try:
        return max(0.0, float(os.environ.get("GPU_RUNNER_RETRY_BASE_S", "2")))
    except ValueError:
        return 2.0


def retry_attempts() -> int:
    try:
        return max(1, int(os.environ.get("GPU_RUNNER_RETRY_ATTEMPTS", "6")))
    except ValueError:
        return 6


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of a google-api-core or requests error, if any."""
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    resp = getattr(exc, "response", None)
    code = getattr(resp, "status_code", None)
    return code if isinstance(code, int) else None


def retry_after_s(exc: BaseException) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form), if the error carries one."""
    resp = getattr(exc, "response", None)
    headers = getattr(resp, "headers", None) or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return None


def reasons_of(exc: BaseException) -> list[str]:
    """The ``reason`` of each item of a Google API error's ``errors`` (google-api-core keeps them)."""
    out = []
    for e in getattr(exc, "errors", None) or []:
        if isinstance(e, dict) and e.get("reason"):
            out.append(str(e["reason"]))
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and reason:
        out.append(reason)
    return out


def is_rate_limited(exc: BaseException) -> bool:
    """A 403 that only says the project made too many requests (Compute Engine's rate quotas)."""
    return status_of(exc) == 403 and any(r in RATE_LIMIT_REASONS for r in reasons_of(exc))


def is_transient(exc: BaseException) -> bool:
    if status_of(exc) in RETRY_STATUS or is_rate_limited(exc):
        return True
    import requests

    return isinstance(exc, (requests.ConnectionError, requests.Timeout))


def _wait(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    after = retry_after_s(exc) if exc else None
    if after is not None:
        return min(after, 300.0)
    base = retry_base_s()
    step = base * (2 ** (state.attempt_number - 1))
    return min(step, 60.0) * (0.5 + random.random() / 2)


def call_with_retry(fn: Callable[..., T], *args: Any, on_retry: Callable[[str], None] | None = None,
                    what: str = "call", **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, retried on 429/5xx, 403 rate limits and connection errors
    (Retry-After honoured)."""

    def before_sleep(state: RetryCallState) -> None:
        if on_retry and state.outcome is not None:
            exc = state.outcome.exception()
            wait = state.next_action.sleep if state.next_action else 0
            why = f"{status_of(exc)} {' '.join(reasons_of(exc))}" if exc is not None and is_rate_limited(exc) else (
                status_of(exc) or type(exc).__name__)
            on_retry(f"{what}: {why}, retrying in {wait:.1f}s "
                     f"(attempt {state.attempt_number + 1}/{retry_attempts()})")

    for attempt in Retrying(retry=retry_if_exception(is_transient), stop=stop_after_attempt(retry_attempts()),
                            wait=_wait, before_sleep=before_sleep, reraise=True):
        with attempt:
            return fn(*args, **kwargs)
    raise AssertionError("unreachable")  # pragma: no cover
