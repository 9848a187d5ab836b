"""A worker's side of pushes (`_push_scripts`): hearing the claims pushed to it, and taking them back on stop.

A pushed claim may reach the worker twice: in its push message and, when its next claim went out before
that message was heard, handed back by that claim from its inbox. Each pushed claim has a token of its
own, so the worker starts it once, when it first sees that token. A push message that never arrives (a
dropped pub/sub connection) is handed back by the next claim; the listener claims at once after
subscribing again, and an idle worker claims at least every ``idle_check``.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._claims import Claim, read_claim
from ._layout import run_script

if TYPE_CHECKING:
    from ._jobs import JobClient

logger = logging.getLogger("arq_mediator.worker")
# Pushed tokens remembered, to tell a push heard twice: far more than one claim can hand back.
_REMEMBERED = 4096
# A registration lasts this many idle_check ticks: the idle worker claims (and registers again) each tick,
# so one lost tick does not end it; a dead worker is pushed to at most this long.
REGISTRATION_TICKS = 3
_PUSH_FIELDS = 8


def read_push(data: bytes) -> tuple[int, str, list[bytes]] | None:
    """Read a push message: (server now, token, the claim's six fields), or ``None`` when malformed."""
    fields: list[bytes] = []
    at = 0
    while at < len(data) and len(fields) < _PUSH_FIELDS:
        colon = data.find(b":", at)
        if colon < 0 or not data[at:colon].isdigit():
            return None
        end = colon + 1 + int(data[at:colon])
        if end > len(data):
            return None
        fields.append(data[colon + 1 : end])
        at = end
    if len(fields) != _PUSH_FIELDS or at != len(data) or not fields[0].isdigit():
        return None
    return int(fields[0]), fields[1].decode(errors="replace"), fields[2:]


class Pushes:
    """What one worker instance needs to take pushes: its channel, its claim arguments, the tokens seen.

    Args:
        jobs: The mediator's job client.
        instance: The worker instance the pushes are addressed to.
        queues: Its queues.
        idle_check: Its idle claim interval (seconds).
        enabled: Whether it takes pushes at all (never on a cluster).
    """

    def __init__(
        self, jobs: JobClient, instance: str, queues: Sequence[str], idle_check: float, *, enabled: bool
    ) -> None:
        self._jobs = jobs
        self._instance = instance
        self._queues = list(queues)
        self._register_ms = int(idle_check * 1000 * REGISTRATION_TICKS)
        self.enabled = enabled and not jobs.layout.cluster
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.heard = 0

    @property
    def channel(self) -> str | None:
        """Return the channel pushes to this worker come on, or ``None`` when it takes none."""
        return self._jobs.channels.push(self._instance) if self.enabled else None

    def claim_arguments(self, *, stopping: bool) -> list[str | int]:
        """Return CLAIM's push arguments: the instance ('' for none) and how long a registration lasts."""
        if not self.enabled:
            return ["", 0]
        return [self._instance, 0 if stopping else self._register_ms]

    def first_sight(self, token: str) -> bool:
        """Return whether the pushed claim with *token* is seen for the first time (and remember it)."""
        if token in self._seen:
            return False
        self._seen[token] = None
        if len(self._seen) > _REMEMBERED:
            self._seen.popitem(last=False)
        return True

    def read(self, data: bytes) -> Claim | None:
        """Return the claim a push message *data* carries, or ``None`` when it is malformed or seen before."""
        push = read_push(data)
        if push is None:
            logger.warning("worker %s ignored a malformed push message", self._instance)
            return None
        now, token, fields = push
        if not self.first_sight(token):
            return None
        self.heard += 1
        return read_claim(fields, token, now)

    async def stop(self, running: Sequence[bytes]) -> int:
        """Take this worker's registration back, then give back the pushed claims it has not started.

        *running*: the key ids of the jobs it runs. Returns how many went back to their queues.
        """
        if not self.enabled:
            return 0
        arguments = [self._instance, len(self._queues), *self._queues, *running]
        given = await run_script(self._jobs.scripts.stop_pushes, [], arguments)
        return int(given)
