"""The taskiq worker process's broker, for `python -m taskiq worker ...taskiq_worker:broker`."""

from __future__ import annotations

from .taskiq_peer import broker as make_broker
from .workload import fast, redis_url

broker, task = make_broker(redis_url(), fast())
