"""What a worker holds while it runs a job: the claim the CLAIM script handed it, read defensively.

Every field of a claim comes from Redis, where any client may have written anything; reading a claim
never raises, and what cannot be read becomes the claim's `problem`, for the worker to fail the job with.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("arq_mediator.worker")

# The id a job whose id is not text is recorded under, since nobody could type or print the real one.
INVALID_ID_PREFIX = "invalid-id:"
_FIELDS = 6


@dataclass(slots=True)
class Claim:
    """One job a worker took, under a fenced lease.

    Attributes:
        id: The job id as text (for an id that is not UTF-8, ``invalid-id:<hex>``).
        key_id: The id as stored in Redis, to address the job's keys.
        queue: The queue it was taken from.
        token: The lease token of this claim; only its holder can settle the job.
        deliveries: How many times the job was handed to a worker, this time included.
        due_at: When (ms, server time) the job became due.
        claimed_at: When (ms, server time) it was claimed.
        body: The job's envelope as stored (cut short when it is oversized).
        problem: Why the job cannot run as it stands; empty when it can.
        aborting: Set when someone asked to abort the job while it runs.
        lost: Set when the worker found its lease taken by another claim.
        settling: Set once the worker writes the job's outcome; cancelling it then would change nothing.
    """

    id: str
    key_id: bytes
    queue: str
    token: str
    deliveries: int
    due_at: int
    claimed_at: int
    body: bytes
    problem: str = ""
    aborting: bool = False
    lost: bool = False
    settling: bool = False

    def fence(self) -> list[bytes | str | int]:
        """Return the arguments that prove this claim holds the job: key id, token, deliveries."""
        return [self.key_id, self.token, self.deliveries]


@dataclass(frozen=True, slots=True)
class ClaimReply:
    """The CLAIM script's answer: the server's time, the next due job, queues it could not read, claims."""

    now: int
    next_due: int
    bad_queues: list[str]
    claims: list[Claim]


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _number(value: Any) -> int:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return 0


def read_claim(fields: Sequence[Any], token: str, now: int) -> Claim:
    """Read one claim's *fields* (id, queue, deliveries, score, body, problem), taken with *token* at *now*.

    Never raises: what cannot be read becomes the claim's problem.
    """
    key_id, queue, deliveries, due_at, body, problem = fields
    key_id = key_id if isinstance(key_id, bytes) else str(key_id).encode()
    try:
        job_id = key_id.decode()
    except UnicodeDecodeError:
        job_id = INVALID_ID_PREFIX + key_id.hex()
        problem = problem or f"its id {key_id!r} is not UTF-8 text"
    return Claim(
        id=job_id,
        key_id=key_id,
        queue=_text(queue),
        token=token,
        deliveries=_number(deliveries),
        due_at=_number(due_at),
        claimed_at=now,
        body=body if isinstance(body, bytes) else _text(body).encode(),
        problem=_text(problem),
    )


def read_claim_reply(reply: list[Any], token: str) -> ClaimReply:
    """Read the CLAIM script's *reply* to a claim made with lease *token*.

    The pushed claims it hands back (each with its own token, see `_push_scripts`) come first.
    """
    now, next_due = _number(reply[0]), _number(reply[1])
    bad_queues = [line for line in _text(reply[2]).split("\n") if line]
    claims = []
    pushed = reply[3] if isinstance(reply[3], list) else []
    for index in range(0, len(pushed) - _FIELDS, _FIELDS + 1):
        claims.append(read_claim(pushed[index : index + _FIELDS], _text(pushed[index + _FIELDS]), now))
    for index in range(4, len(reply) - _FIELDS + 1, _FIELDS):
        claims.append(read_claim(reply[index : index + _FIELDS], token, now))
    return ClaimReply(now=now, next_due=next_due, bad_queues=bad_queues, claims=claims)


async def claim_per_queue(
    claim_from: Callable[[Sequence[str], int, int], Awaitable[ClaimReply]],
    queues: Sequence[str],
    free: int,
    ahead: int,
    unreachable: set[str],
    worker: str,
) -> ClaimReply:
    """Claim up to *free* jobs on a cluster: one call per queue (each its own slot), in priority order.

    The first queue may give *ahead* jobs more (the worker's prefetch); the others only fill free slots.
    A queue is asked only after every queue before it gave all the due jobs it had, so no job of a
    lower-priority queue is taken while a higher one had a due job this claim could take. A queue whose
    node does not answer (it failed, its replica is not promoted yet) is passed over: this claim cannot
    take its jobs, and the jobs already taken from the queues before it must still start. Passed over
    queues are kept in *unreachable* (logged once until their node answers); when no queue answers,
    the first error is raised, for the claim loop to back off.
    """
    now, next_due = 0, -1
    bad_queues: list[str] = []
    claims: list[Claim] = []
    failures: list[Exception] = []
    for queue in queues:
        try:
            reply = await claim_from([queue], free - len(claims), ahead if queue == queues[0] else 0)
        except Exception as error:  # its node is down or moving: the other queues' nodes may answer
            failures.append(error)
            if queue not in unreachable:
                unreachable.add(queue)
                logger.warning(
                    "worker %s cannot reach queue %s (%r); claiming from the others", worker, queue, error
                )
            continue
        if queue in unreachable:
            unreachable.discard(queue)
            logger.warning("worker %s reaches queue %s again", worker, queue)
        now = max(now, reply.now)
        if reply.next_due >= 0 and (next_due < 0 or reply.next_due < next_due):
            next_due = reply.next_due
        bad_queues += reply.bad_queues
        claims += reply.claims
        if len(claims) >= free:
            break
    if failures and len(failures) == len(queues):
        raise failures[0]
    return ClaimReply(now=now, next_due=next_due, bad_queues=bad_queues, claims=claims)
