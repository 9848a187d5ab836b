"""Where things live in Redis.

Queues, jobs, leases, tries and results use arq's own key layout (`arq.constants`), so arq's tools and
`arq.jobs.Job(...).status()` read our jobs' state. What arq lacks (failed-job lists, worker heartbeats,
wake-up and completion channels, abort flags) lives under the ``arqm:`` prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix, retry_key_prefix

from ._layout import SINGLE, Layout, tag_of

QUEUE_PREFIX = "arq:queue:"
JOB_PREFIX = job_key_prefix
LEASE_PREFIX = in_progress_key_prefix
RESULT_PREFIX = result_key_prefix
DELIVERIES_PREFIX = retry_key_prefix
FAILED_PREFIX = "arqm:failed:"
WORKER_PREFIX = "arqm:worker:"
ABORT_PREFIX = "arqm:abort:"
RUNNING_PREFIX = "arqm:running:"
RECURRING_PREFIX = "arqm:recurring:"
# The set of every queue name a job was ever enqueued on, and the sorted set of worker heartbeat keys
# scored by when each expires: what introspection reads instead of scanning the keyspace.
QUEUES_KEY = "arqm:queues"
WORKERS_KEY = "arqm:workers"
# Pushes to idle workers (`_push_scripts`): per queue the instances ready for a push, per instance its
# registration and its inbox of pushed claims.
PUSH_READY_PREFIX = "arqm:pushready:"
PUSH_WORKER_PREFIX = "arqm:push:"
PUSH_INBOX_PREFIX = "arqm:inbox:"
# The value a lease holds between a failed try and its retry: no worker holds the job then.
RETRY_MARK = "retry"


def job_key(job_id: str) -> str:
    """Return the key holding a job's JSON envelope while it is queued or running."""
    return JOB_PREFIX + job_id


def result_key(job_id: str) -> str:
    """Return the key holding a finished job's JSON result record."""
    return RESULT_PREFIX + job_id


def failed_key(queue: str) -> str:
    """Return the sorted set of a queue's failed job ids, scored by when (ms) their records expire."""
    return FAILED_PREFIX + queue


def recurring_key(name: str) -> str:
    """Return the key holding the last tick (ms) of recurring job *name* that was enqueued."""
    return RECURRING_PREFIX + name


def worker_key(instance: str) -> str:
    """Return the heartbeat key of one worker process."""
    return WORKER_PREFIX + instance


@dataclass(frozen=True, slots=True)
class Channels:
    """Pub/sub channel names for one database.

    Pub/sub is server-wide, not per database, so the names carry the database number: otherwise a job
    id or queue shared by two databases (two environments on one server) would cross-talk. On a cluster
    they are sharded channels carrying their queue's hash tag, as the scripts' keys do (`Layout`).
    """

    db: int
    layout: Layout = SINGLE

    @property
    def wake_prefix(self) -> str:
        """Return the prefix of the channels that tell idle workers a queue has a new job."""
        return f"arqm:{self.db}:wake:"

    @property
    def push_prefix(self) -> str:
        """Return the prefix of the channels a worker instance hears the claims pushed to it on."""
        return f"arqm:{self.db}:push:"

    def push(self, instance: str) -> str:
        """Return the push channel of worker *instance*."""
        return self.push_prefix + instance

    @property
    def done_prefix(self) -> str:
        """Return the prefix of the channels a job's result record is published on when it finishes."""
        return f"arqm:{self.db}:done:"

    @property
    def abort(self) -> str:
        """Return the channel asking workers to cancel a running job (on a cluster, see `abort_of`)."""
        return f"arqm:{self.db}:abort"

    @property
    def events(self) -> str:
        """Return the channel job state changes go to, as ``<state>\\t<queue>\\t<id>`` (history on)."""
        return f"arqm:{self.db}:events"

    def abort_of(self, queue: str) -> str:
        """Return the abort channel the workers of *queue* hear."""
        return self.layout.named(self.abort, queue)

    def events_of(self, queue: str) -> str:
        """Return the events channel *queue*'s state changes go to."""
        return self.layout.named(self.events, queue)

    def wake(self, queue: str) -> str:
        """Return the wake-up channel of *queue*."""
        return self.layout.key(self.wake_prefix, queue, queue)

    def done(self, job_id: str) -> str:
        """Return the completion channel of *job_id*."""
        return self.layout.job_key(self.done_prefix, job_id)

    def job_of(self, done_channel: str) -> str:
        """Return the job id a completion channel is named after."""
        name = done_channel[len(self.done_prefix) :]
        if self.layout.cluster and tag_of(name) is not None:
            return name[name.index("}") + 2 :]
        return name
