"""A retrying, time-limited HTTP transport for STAC APIs.

Public STAC APIs throttle (429) and have transient gateway errors (502/503/504); item searches are
idempotent, so POST is retried as well as GET. ``Retry-After`` is honoured. Every request has a
timeout, so a hung server becomes an error instead of a hung pipeline.
"""

from __future__ import annotations

from pystac_client.stac_api_io import StacApiIO
from urllib3.util.retry import Retry

__all__ = ["retry_policy", "retrying_stac_io"]

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
RETRY_METHODS = frozenset({"GET", "HEAD", "POST"})


def retry_policy(*, max_retries: int, backoff_s: float = 0.5, backoff_max_s: float = 30.0) -> Retry:
    """urllib3 retries with exponential backoff on connection errors, read timeouts, 429 and 5xx."""
    if max_retries < 0:
        raise ValueError(f"max_retries must be >= 0, got {max_retries}")
    return Retry(
        total=max_retries,
        connect=max_retries,
        read=max_retries,
        status=max_retries,
        other=0,
        backoff_factor=backoff_s,
        backoff_max=backoff_max_s,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=RETRY_METHODS,
        respect_retry_after_header=True,
        raise_on_status=True,
    )


def retrying_stac_io(
    *,
    timeout_s: float,
    max_retries: int,
    backoff_s: float = 0.5,
    headers: dict[str, str] | None = None,
) -> StacApiIO:
    """A pystac-client ``StacApiIO`` whose session retries and times out as configured.

    ``timeout_s`` bounds connecting and each wait for data; a request that keeps timing out is
    retried ``max_retries`` times, so the worst case is about ``(max_retries + 1) * timeout_s`` plus
    the backoff sleeps.
    """
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    policy = retry_policy(max_retries=max_retries, backoff_s=backoff_s)
    # StacApiIO mounts an HTTPAdapter with this Retry on http:// and https://; 0 retries -> plain adapter.
    return StacApiIO(headers=headers, timeout=timeout_s, max_retries=policy if max_retries > 0 else None)
