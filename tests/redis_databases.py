"""The Redis databases a test run works in: free ones it claims, so two runs on one machine never meet.

Each kind of test (a *role*) that talks to the shared Redis (``REDIS_URL``, default redis://127.0.0.1:6379)
works in a database of its own and flushes it around every test. The numbers are chosen once per run, the
first time a test needs one: the run claims a database by setting ``arq-mediator-tests:claim:<number>`` in
database 0 to its run id (``SET NX`` with an expiry it keeps renewing), and deletes its claims at the end.
A database another run holds is passed over, and so is one holding keys no test run wrote (the numbers the
tests ever claimed are kept in ``arq-mediator-tests:used``), so nothing but the tests' own data is flushed.
Database 0 is never given out.

An environment variable pins a role to a number, which is claimed all the same so no other run takes it:
see `PINNED_BY`.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Mapping
from typing import Literal, Protocol, cast, get_args
from urllib.parse import urlsplit, urlunsplit

from redis import Redis
from redis.exceptions import RedisError, ResponseError

Role = Literal["jobs", "neighbour", "testing", "services", "tracing", "readme"]
ROLES: tuple[Role, ...] = get_args(Role)
# Who uses each role, and the variable that pins it to a number.
PINNED_BY: dict[Role, str | None] = {
    "jobs": "ARQM_TEST_REDIS_DB",  # tests/jobs and tests/telemetry
    "neighbour": None,  # tests/jobs: another app on another database of the same server
    "testing": "ARQM_TESTING_REDIS_DB",  # tests/testing's Redis mode
    "services": "ARQM_SERVICES_REDIS_DB",  # tests/services, the demo's API and worker processes
    "tracing": "ARQM_TRACING_REDIS_DB",  # tests/tracing, the demo's processes exporting spans
    "readme": None,  # tests/test_readme.py, examples/background.py as a process
}
DEFAULT_SERVER = "redis://127.0.0.1:6379"
CLAIM_PREFIX = "arq-mediator-tests:claim:"
USED = "arq-mediator-tests:used"
# A run that dies without releasing holds its databases this long; a live one renews four times as often.
CLAIM_SECONDS = 120
# When the server does not say (CONFIG may be disabled), Redis's default.
DEFAULT_DATABASES = 16

# For every claim still holding this run's id: ARGV[2] set as its expiry (renew) or nothing (release).
_RENEW_OR_RELEASE = """
local kept = 0
for _, key in ipairs(KEYS) do
    if redis.call('GET', key) == ARGV[1] then
        if ARGV[2] == '' then redis.call('DEL', key) else redis.call('EXPIRE', key, ARGV[2]) end
        kept = kept + 1
    end
end
return kept
"""


class FlushedRedis(Protocol):
    """Return the URL of this run's database for *role*, emptied now and again when the test ends."""

    async def __call__(self, role: Role = "jobs") -> str: ...


class DatabasesUnavailableError(RuntimeError):
    """The Redis server has too few databases this run may claim."""


def server_url(environ: Mapping[str, str] = os.environ) -> str:
    """Return REDIS_URL, or the default local server, as the tests read it."""
    return environ.get("REDIS_URL", DEFAULT_SERVER)


def url_for(server: str, number: int) -> str:
    """Return *server*'s URL pointed at database *number*."""
    parts = urlsplit(server)
    return urlunsplit((parts.scheme, parts.netloc, f"/{number}", parts.query, parts.fragment))


def claim_key(number: int) -> str:
    """Return the key in database 0 that says which run holds database *number*."""
    return f"{CLAIM_PREFIX}{number}"


class RedisDatabases:
    """This run's databases on one server: claimed together on first use, renewed, released by `close`."""

    def __init__(self, server: str, *, environ: Mapping[str, str] = os.environ) -> None:
        self.server = server
        self.run_id = f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
        self._environ = dict(environ)
        self._numbers: dict[Role, int] = {}
        self._client: Redis | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._lost = False

    def number(self, role: Role) -> int:
        """Return the database number of *role*, claiming every role's database on the first call."""
        if not self._numbers:
            self._claim()
        return self._numbers[role]

    def url(self, role: Role) -> str:
        """Return the URL of *role*'s database."""
        return url_for(self.server, self.number(role))

    def close(self) -> None:
        """Stop renewing and release this run's claims.

        Raises:
            DatabasesUnavailableError: a claim expired during the run, so another run may have shared it.
        """
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        if self._client is not None:
            try:
                self._renew_or_release(release=True)
            finally:
                self._client.close()
        if self._lost:
            raise DatabasesUnavailableError(
                f"this run's claims on databases {sorted(self._numbers.values())} of {self.server} lapsed "
                f"while it ran (was it stopped for over {CLAIM_SECONDS} s?): another run may have used them"
            )

    def _claim(self) -> None:
        client: Redis = Redis.from_url(url_for(self.server, 0))
        self._client = client
        for role, number in self._pinned().items():
            if not self._claim_one(number) and client.get(claim_key(number)) != self.run_id.encode():
                holder = client.get(claim_key(number))
                self._release_all()
                raise DatabasesUnavailableError(
                    f"database {number} of {self.server}, pinned by {PINNED_BY[role]}, is held by another "
                    f"test run ({holder!r}); unset the variable or pick another number"
                )
            self._take(role, number)
        wanted = [role for role in ROLES if role not in self._numbers]
        held_by_others: list[int] = []
        foreign_keys: list[int] = []
        count = self._database_count(client)
        for number in range(1, count):
            if not wanted:
                break
            if number in self._numbers.values():
                continue
            if not self._claim_one(number):
                held_by_others.append(number)
            elif not self._holds_only_test_keys(number):
                client.delete(claim_key(number))
                foreign_keys.append(number)
            else:
                self._take(wanted.pop(0), number)
        if wanted:
            found = len(self._numbers)
            self._release_all()
            reasons = [f"the server has {count} databases"]
            if held_by_others:
                reasons.append(f"held by other test runs: {held_by_others}")
            if foreign_keys:
                reasons.append(f"holding keys no test run wrote: {foreign_keys}")
            raise DatabasesUnavailableError(
                f"the tests need {len(ROLES)} Redis databases of {self.server} besides database 0 and found "
                f"{found} free ({'; '.join(reasons)}). Wait for the other runs, empty a database, or point "
                "REDIS_URL at a server started with more (redis-server --databases 32)."
            )
        self._renewer = threading.Thread(target=self._keep_renewing, name="redis-claims", daemon=True)
        self._renewer.start()

    def _pinned(self) -> dict[Role, int]:
        pinned: dict[Role, int] = {}
        for role, variable in PINNED_BY.items():
            if variable is None or variable not in self._environ:
                continue
            pinned[role] = int(self._environ[variable])
            if pinned[role] == 0:
                raise DatabasesUnavailableError(f"{variable}=0: the tests flush their databases, never 0")
        return pinned

    def _claim_one(self, number: int) -> bool:
        assert self._client is not None
        return bool(self._client.set(claim_key(number), self.run_id, nx=True, ex=CLAIM_SECONDS))

    def _holds_only_test_keys(self, number: int) -> bool:
        """Tell whether database *number* is empty or one the tests used before (so its keys are theirs)."""
        assert self._client is not None
        database: Redis = Redis.from_url(url_for(self.server, number))
        try:
            empty = cast(int, database.dbsize()) == 0
        finally:
            database.close()
        return empty or bool(self._client.sismember(USED, str(number)))

    def _take(self, role: Role, number: int) -> None:
        assert self._client is not None
        self._numbers[role] = number
        self._client.sadd(USED, str(number))

    def _database_count(self, client: Redis) -> int:
        try:
            found = cast(dict[str, str], client.config_get("databases"))
            return int(found.get("databases", DEFAULT_DATABASES))
        except ResponseError:  # CONFIG renamed or disabled on a managed server
            return DEFAULT_DATABASES

    def _renew_or_release(self, *, release: bool) -> int:
        assert self._client is not None
        keys = [claim_key(number) for number in self._numbers.values()]
        if not keys:
            return 0
        argument = "" if release else str(CLAIM_SECONDS)
        return cast(int, self._client.eval(_RENEW_OR_RELEASE, len(keys), *keys, self.run_id, argument))

    def _release_all(self) -> None:
        self._renew_or_release(release=True)
        self._numbers.clear()
        if self._client is not None:
            self._client.close()
            self._client = None

    def _keep_renewing(self) -> None:
        while not self._stop.wait(CLAIM_SECONDS / 4):
            try:
                if self._renew_or_release(release=False) < len(self._numbers):
                    self._lost = True
            except (RedisError, OSError):  # a blip: the next renewal, well before the expiry, tries again
                continue
