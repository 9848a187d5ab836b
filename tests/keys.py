"""Where the tests look in Redis: the library's key layout, plus the keys only the tests read."""

from __future__ import annotations

from arq_mediator._keys import (
    ABORT_PREFIX,
    DELIVERIES_PREFIX,
    JOB_PREFIX,
    LEASE_PREFIX,
    PUSH_INBOX_PREFIX,
    PUSH_READY_PREFIX,
    QUEUE_PREFIX,
    RUNNING_PREFIX,
    Channels,
    failed_key,
    job_key,
    recurring_key,
    result_key,
)

__all__ = [
    "JOB_PREFIX",
    "QUEUE_PREFIX",
    "Channels",
    "abort_key",
    "deliveries_key",
    "failed_key",
    "job_key",
    "lease_key",
    "push_inbox_key",
    "push_ready_key",
    "queue_key",
    "recurring_key",
    "result_key",
    "running_key",
]


def queue_key(queue: str) -> str:
    """Return the sorted set of *queue*'s job ids."""
    return QUEUE_PREFIX + queue


def running_key(queue: str) -> str:
    """Return the sorted set of *queue*'s running job ids, scored by their lease deadlines."""
    return RUNNING_PREFIX + queue


def lease_key(job_id: str) -> str:
    """Return the key whose existence marks *job_id* as running."""
    return LEASE_PREFIX + job_id


def deliveries_key(job_id: str) -> str:
    """Return the counter of how many times *job_id* was handed to a worker."""
    return DELIVERIES_PREFIX + job_id


def abort_key(job_id: str) -> str:
    """Return the flag asking the worker running *job_id* to cancel it."""
    return ABORT_PREFIX + job_id


def push_ready_key(queue: str) -> str:
    """Return the sorted set of the worker instances ready for a push of *queue*'s jobs."""
    return PUSH_READY_PREFIX + queue


def push_inbox_key(instance: str) -> str:
    """Return the hash of the claims pushed to worker *instance* that it may not have started."""
    return PUSH_INBOX_PREFIX + instance
