"""Where things live in Redis.

Queues, jobs, leases, tries and results use arq's own key layout (`arq.constants`), so arq's tools and
`arq.jobs.Job(...).status()` read our jobs' state. What arq lacks (failed-job lists, worker heartbeats,
wake-up and completion channels, abort flags) lives under the ``arqm:`` prefix.
"""

from __future__ import annotations

from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix, retry_key_prefix

QUEUE_PREFIX = "arq:queue:"
JOB_PREFIX = job_key_prefix
LEASE_PREFIX = in_progress_key_prefix
RESULT_PREFIX = result_key_prefix
DELIVERIES_PREFIX = retry_key_prefix
FAILED_PREFIX = "arqm:failed:"
WORKER_PREFIX = "arqm:worker:"
WAKE_PREFIX = "arqm:wake:"
DONE_PREFIX = "arqm:done:"
ABORT_PREFIX = "arqm:abort:"
ABORT_CHANNEL = "arqm:abort"


def queue_key(queue: str) -> str:
    """Return the sorted set of a queue's job ids, scored by the time (ms) each may start."""
    return QUEUE_PREFIX + queue


def job_key(job_id: str) -> str:
    """Return the key holding a job's JSON envelope while it is queued or running."""
    return JOB_PREFIX + job_id


def lease_key(job_id: str) -> str:
    """Return the key whose existence marks a job as running; it expires unless its worker renews it."""
    return LEASE_PREFIX + job_id


def result_key(job_id: str) -> str:
    """Return the key holding a finished job's JSON result record."""
    return RESULT_PREFIX + job_id


def deliveries_key(job_id: str) -> str:
    """Return the counter of how many times a job was handed to a worker."""
    return DELIVERIES_PREFIX + job_id


def failed_key(queue: str) -> str:
    """Return the sorted set of a queue's failed job ids, scored by the time (ms) they failed."""
    return FAILED_PREFIX + queue


def worker_key(instance: str) -> str:
    """Return the heartbeat key of one worker process."""
    return WORKER_PREFIX + instance


def wake_channel(queue: str) -> str:
    """Return the channel that tells idle workers a queue has a new job."""
    return WAKE_PREFIX + queue


def done_channel(job_id: str) -> str:
    """Return the channel a job's result record is published on when it finishes."""
    return DONE_PREFIX + job_id


def abort_key(job_id: str) -> str:
    """Return the flag asking the worker running a job to cancel it."""
    return ABORT_PREFIX + job_id
