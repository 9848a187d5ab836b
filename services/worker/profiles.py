"""The worker profiles of the demo and how the environment overrides them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from arq_mediator import WorkerSettings
from arq_mediator.outbox import OutboxRelay

# Health checks reach a container's port from outside it.
DEFAULT_HTTP_HOST = "0.0.0.0"  # noqa: S104
# Every queue a demo handler uses; a worker asking for another would wait for jobs that never come.
DEMO_QUEUES = ("critical", "default", "emails", "reports", "cleanup")


class ConfigurationError(ValueError):
    """The command line or the environment asks for a worker that cannot run; the message says why."""


@dataclass(frozen=True, slots=True)
class Profile:
    """A worker of the original demo: its name, queues (highest priority first) and concurrency cap."""

    worker_name: str
    queues: tuple[str, ...]
    max_jobs: int


PROFILES: dict[str, Profile] = {
    "general": Profile("Worker-1", ("critical", "default", "emails", "reports", "cleanup"), 20),
    "balanced": Profile("Worker-2", ("critical", "emails", "default", "cleanup", "reports"), 15),
    "heavy": Profile("Worker-3-Heavy", ("reports", "cleanup"), 5),
}


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """What one worker process runs as: its profile with the environment's overrides applied.

    Attributes:
        profile: The profile it started from (``general``, ``balanced`` or ``heavy``).
        name: The worker's name in logs and stats.
        queues: Its queues, highest priority first.
        max_jobs: Jobs it runs at once, at most.
        http_host: Where the health server listens, when it runs.
        http_port: The health server's port, or ``None`` for no health server.
    """

    profile: str
    name: str
    queues: tuple[str, ...]
    max_jobs: int
    http_host: str = DEFAULT_HTTP_HOST
    http_port: int | None = None

    def describe(self) -> str:
        """Return the start-up line of the original's workers, with the queues added."""
        return (
            f"Configuring as WORKER container: {self.name} (max {self.max_jobs} concurrent jobs), "
            f"queues: {', '.join(self.queues)}"
        )

    def worker_settings(self, relay: OutboxRelay | None = None) -> WorkerSettings:
        """Return the library's settings for this worker, running *relay* beside its jobs when given."""
        return WorkerSettings(queues=self.queues, max_jobs=self.max_jobs, name=self.name, relay=relay)


def _integer(environ: Mapping[str, str], name: str, low: int, high: int) -> int | None:
    raw = environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a whole number from {low} to {high}, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigurationError(f"{name} must be from {low} to {high}, got {value}")
    return value


def _queues(raw: str) -> tuple[str, ...]:
    queues = tuple(queue.strip() for queue in raw.split(","))
    if any(not queue for queue in queues):
        raise ConfigurationError(f"WORKER_QUEUES must be a comma-separated list of queue names, got {raw!r}")
    unknown = [queue for queue in queues if queue not in DEMO_QUEUES]
    if unknown:
        raise ConfigurationError(
            f"WORKER_QUEUES names {', '.join(unknown)}, which no demo job uses; "
            f"the queues are {', '.join(DEMO_QUEUES)}"
        )
    if len(set(queues)) != len(queues):
        raise ConfigurationError(f"WORKER_QUEUES lists a queue twice: {raw!r}")
    return queues


def configure(profile: str | None, environ: Mapping[str, str]) -> WorkerConfig:
    """Return the worker *profile* (or ``WORKER_PROFILE``) with the overrides in *environ* applied.

    ``WORKER_NAME``, ``MAX_CONCURRENT_JOBS`` and ``WORKER_QUEUES`` (comma-separated) override the profile;
    ``WORKER_HTTP_PORT`` (and ``WORKER_HTTP_HOST``) turn on the health server.

    Raises:
        ConfigurationError: no or an unknown profile, or an override that is not valid.
    """
    chosen = profile or environ.get("WORKER_PROFILE", "").strip()
    if not chosen:
        raise ConfigurationError(
            f"name a worker profile ({', '.join(PROFILES)}) on the command line or in WORKER_PROFILE"
        )
    base = PROFILES.get(chosen)
    if base is None:
        raise ConfigurationError(f"unknown worker profile {chosen!r}; choose one of {', '.join(PROFILES)}")
    raw_queues = environ.get("WORKER_QUEUES", "").strip()
    max_jobs = _integer(environ, "MAX_CONCURRENT_JOBS", 1, 1000)
    return WorkerConfig(
        profile=chosen,
        name=environ.get("WORKER_NAME", "").strip() or base.worker_name,
        queues=_queues(raw_queues) if raw_queues else base.queues,
        max_jobs=base.max_jobs if max_jobs is None else max_jobs,
        http_host=environ.get("WORKER_HTTP_HOST", "").strip() or DEFAULT_HTTP_HOST,
        http_port=_integer(environ, "WORKER_HTTP_PORT", 1, 65535),
    )
