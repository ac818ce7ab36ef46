"""Retry decisions and backoff delays: pure functions of a `RetryPolicy`.

Kept apart from the engine so that the arithmetic can be checked exactly,
with a seeded random source and no clock.
"""

from __future__ import annotations

import random
from datetime import timedelta

from flowservice.models import RetryPolicy

__all__ = ["backoff_delay", "retry_delay", "should_retry"]


def should_retry(policy: RetryPolicy, attempt: int, error_type: str) -> bool:
    """Whether attempt number `attempt` (from 1), failed with `error_type`, is retried."""
    return attempt < policy.max_attempts and error_type not in policy.non_retryable_errors


def backoff_delay(policy: RetryPolicy, attempt: int, rng: random.Random) -> timedelta:
    """The wait after failed attempt number `attempt` (from 1) before the next one.

    `initial_interval * backoff_coefficient^(attempt-1)`, capped at
    `maximum_interval` (100 times initial when unset); with jitter, drawn
    uniformly from [0, that value].
    """
    initial = policy.initial_interval.total_seconds()
    cap = _longest_wait(policy)
    # min() before the power would overflow: a large attempt count stays capped.
    seconds = initial
    for _ in range(attempt - 1):
        seconds *= policy.backoff_coefficient
        if seconds >= cap:
            break
    seconds = min(seconds, cap)
    if policy.jitter:
        seconds = rng.uniform(0.0, seconds)
    return timedelta(seconds=seconds)


def retry_delay(
    policy: RetryPolicy, attempt: int, rng: random.Random, retry_after: float | None
) -> timedelta:
    """`backoff_delay`, or the wait the service asked for (`Retry-After`) when longer.

    The asked-for wait stays within the policy: at most `maximum_interval`
    (100 times initial when unset), so a service cannot park a flow for an hour.
    """
    delay = backoff_delay(policy, attempt, rng)
    if retry_after is None or retry_after <= delay.total_seconds():
        return delay
    cap = _longest_wait(policy)
    return timedelta(seconds=max(delay.total_seconds(), min(retry_after, cap)))


def _longest_wait(policy: RetryPolicy) -> float:
    """Seconds of the longest wait between attempts: `maximum_interval`, or 100 times initial."""
    if policy.maximum_interval is not None:
        return policy.maximum_interval.total_seconds()
    return policy.initial_interval.total_seconds() * 100
