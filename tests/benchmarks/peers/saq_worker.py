"""The saq worker process's settings, for `python -m saq ...saq_worker.settings`."""

from __future__ import annotations

from .saq_peer import settings as make_settings
from .workload import redis_url

settings = make_settings(redis_url())
