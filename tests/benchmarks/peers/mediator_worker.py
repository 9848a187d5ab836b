"""The arq-mediator worker process's mediator, for `python -m arq_mediator worker ...:mediator`."""

from __future__ import annotations

from .mediator_peer import build
from .workload import redis_url

mediator = build(redis_url())
