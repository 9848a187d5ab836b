"""Configuration of every service role, read from the environment (the same image runs them all)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_SQLITE = Path(__file__).resolve().parent.parent / ".local" / "demo.sqlite3"


def _number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a number, got {raw!r}") from None


def _whole_number(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit():
        raise SystemExit(f"{name} must be a whole number (0 or more), got {raw!r}")
    return int(raw)


def _flag(name: str) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if raw in {"", "0", "false", "no"}:
        return False
    if raw in {"1", "true", "yes"}:
        return True
    raise SystemExit(f"{name} must be 1/true/yes or 0/false/no, got {raw!r}")


@dataclass(frozen=True, slots=True)
class Settings:
    """Settings shared by the API and the workers.

    Attributes:
        redis_url: Where the queues live (``REDIS_URL``).
        database_url: SQLAlchemy URL of the app data (``DATABASE_URL``); SQLite in ``.local/`` by default.
        work_scale: Multiplies the simulated work durations of the demo jobs (``WORK_SCALE``; 1 = the
            original's 1-5 s, 0.01 for tests).
        email_failure_rate: Chance that a simulated email fails (``EMAIL_FAILURE_RATE``; 1 in 9 by default).
        service_name: Name this process reports (``OTEL_SERVICE_NAME``).
        job_budget: Jobs one client may queue through the API per minute (``API_JOB_BUDGET``; 0 for no
            limit).
        redis_timeout: Seconds a call waits for Redis, to connect or for an answer (``REDIS_TIMEOUT``), so a
            Redis that hangs turns into a 503 within a few seconds rather than a request that hangs.
        dashboard_networks: Networks (CIDRs) whose peers may open the job dashboard besides loopback
            (``DASHBOARD_ALLOW``, comma-separated; compose allows its private network, which only the
            port published on the host's loopback reaches).
        dashboard_read_only: Show the dashboard without its actions (``DASHBOARD_READ_ONLY=1``).
        jaeger_url: The Jaeger UI a job's trace id links to (``JAEGER_UI_URL``), as a browser reaches it.
    """

    redis_url: str = "redis://127.0.0.1:6379"
    database_url: str = field(default_factory=lambda: f"sqlite+aiosqlite:///{DEFAULT_SQLITE}")
    work_scale: float = 1.0
    email_failure_rate: float = 1 / 9
    service_name: str = "api"
    job_budget: int = 20_000
    redis_timeout: float = 2.0
    dashboard_networks: tuple[str, ...] = ()
    dashboard_read_only: bool = False
    jaeger_url: str | None = None

    @classmethod
    def from_env(cls, service_name: str = "api") -> Settings:
        """Read settings from the environment, with the defaults above."""
        defaults = cls()
        return cls(
            redis_url=os.environ.get("REDIS_URL") or defaults.redis_url,
            database_url=os.environ.get("DATABASE_URL") or defaults.database_url,
            work_scale=_number("WORK_SCALE", defaults.work_scale),
            email_failure_rate=_number("EMAIL_FAILURE_RATE", defaults.email_failure_rate),
            service_name=os.environ.get("OTEL_SERVICE_NAME") or service_name,
            job_budget=_whole_number("API_JOB_BUDGET", defaults.job_budget),
            redis_timeout=_number("REDIS_TIMEOUT", defaults.redis_timeout),
            dashboard_networks=tuple(
                network.strip()
                for network in os.environ.get("DASHBOARD_ALLOW", "").split(",")
                if network.strip()
            ),
            dashboard_read_only=_flag("DASHBOARD_READ_ONLY"),
            jaeger_url=os.environ.get("JAEGER_UI_URL") or None,
        )
