"""Docker for the tests: whether a daemon answers, which images to run, and Redis and PostgreSQL containers.

Images: the real ones that compose.yaml and the Dockerfile name, when present or pullable; else stand-ins
(``tests/standins``) built ``FROM`` a Debian root file system that ``debootstrap`` makes here. The root
file system and the images are named by the content hash of what went into them, and the root file system
is kept in ``/var/cache/arq-mediator`` (``ARQM_CONTAINER_CACHE``), so a machine builds each once.

Fixtures: when ``REDIS_URL`` / ``DATABASE_URL`` are unset and nothing answers on the default ports (or
``ARQM_TEST_CONTAINERS=always``), `backing_services` starts Redis and PostgreSQL through testcontainers and
says where they are.

Run as ``python -m tests.containers ARGS`` (what ``python3 tasks.py compose ARGS`` does), it runs compose
on compose.yaml as project ``arq-mediator`` with those images.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path

from tests.deploy.files import base_images, services

TESTS = Path(__file__).resolve().parent
STANDINS = TESTS / "standins"
CACHE = Path(os.environ.get("ARQM_CONTAINER_CACHE", "/var/cache/arq-mediator"))
# Set by tasks.py when no daemon can run here: the reason the container tests skip.
UNAVAILABLE = "ARQM_CONTAINERS_UNAVAILABLE"
# "always": start Redis and PostgreSQL containers even when REDIS_URL / DATABASE_URL are set or the default
# ports answer; the test of that path sets it.
FORCE = "ARQM_TEST_CONTAINERS"
STANDIN_REPOSITORY = "arq-mediator-standin"
# What every stand-in needs, in one root file system: its images then share one base layer.
DEBIAN_PACKAGES = ("ca-certificates", "python3", "python3-venv", "redis-server", "postgresql")
# The CA bundle this machine trusts, which is what reaches the package index from here (pip in the images).
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
DEFAULT_REDIS = ("127.0.0.1", 6379)
DEFAULT_POSTGRES = ("127.0.0.1", 5432)
POSTGRES_PASSWORD = "postgres"
DEBOOTSTRAP_TIMEOUT = 900.0
BUILD_TIMEOUT = 900.0
PULL_TIMEOUT = 300.0
# Another run on this machine may be building the images, or running the stack, for this long.
LOCK_TIMEOUT = 1800.0


class ContainerError(RuntimeError):
    """A docker command or an image build failed; the message holds its output."""


def docker(*arguments: str, timeout: float = 120.0, stdin: Path | None = None) -> str:
    """Run ``docker *arguments*`` against the daemon at DOCKER_HOST; return what it printed.

    Raises:
        ContainerError: it failed or did not finish within *timeout* seconds.
    """
    try:
        with (stdin or Path(os.devnull)).open("rb") as source:
            completed = subprocess.run(
                ["docker", *arguments], stdin=source, capture_output=True, timeout=timeout, check=False
            )
    except subprocess.TimeoutExpired as error:
        raise ContainerError(f"docker {' '.join(arguments)} did not finish within {timeout}s") from error
    if completed.returncode != 0:
        output = (completed.stdout + completed.stderr).decode(errors="replace")
        raise ContainerError(
            f"docker {' '.join(arguments)} failed ({completed.returncode}):\n{output[-4000:]}"
        )
    return completed.stdout.decode(errors="replace")


@functools.cache
def unavailable_reason() -> str | None:
    """Return why no container can run here, or ``None`` when a Docker daemon answers."""
    if reason := os.environ.get(UNAVAILABLE):
        return reason
    if shutil.which("docker") is None:
        return "no docker command (python3 tasks.py test installs Debian's docker.io where it may)"
    try:
        docker("version", "--format", "{{.Server.Version}}", timeout=20)
    except ContainerError as error:
        where = os.environ.get("DOCKER_HOST", "the default socket")
        return f"no Docker daemon answers at {where} ({str(error).splitlines()[-1]})"
    return None


def image_present(image: str) -> bool:
    """Tell whether the daemon has *image*."""
    try:
        docker("image", "inspect", "--format", "{{.Id}}", image, timeout=30)
    except ContainerError:
        return False
    return True


@functools.cache
def pullable(image: str) -> bool:
    """Tell whether *image* is here or can be pulled now (where no registry answers, that fails at once)."""
    if image_present(image):
        return True
    try:
        docker("pull", "--quiet", image, timeout=PULL_TIMEOUT)
    except ContainerError:
        return False
    return True


def content_hash(*parts: bytes | str) -> str:
    """Return a short hash of *parts*, each length-prefixed so that no two sequences collide."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()[:16]


@contextmanager
def machine_lock(name: str, timeout: float) -> Iterator[None]:
    """Hold the lock *name* in the cache folder for the block, so that two test runs on this machine do not
    build the same image or run the same compose project at once; wait for it up to *timeout* seconds."""
    CACHE.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    with (CACHE / f"{name}.lock").open("w") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ContainerError(f"another run held {lock.name} for over {timeout}s") from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# The Debian root file system -------------------------------------------------------------------------------


def os_release() -> dict[str, str]:
    """Return this machine's /etc/os-release as a mapping."""
    fields: dict[str, str] = {}
    for line in Path("/etc/os-release").read_text().splitlines():
        name, equals, value = line.partition("=")
        if equals:
            fields[name] = value.strip().strip('"')
    return fields


def debian_mirror(suite: str) -> str:
    """Return the Debian archive that this machine's apt is set up to use for *suite*."""
    sources = Path("/etc/apt/sources.list.d")
    for path in sorted(sources.glob("*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields = {
                key.strip(): value.strip()
                for line in stanza.splitlines()
                if not line.startswith("#")
                for key, _, value in [line.partition(":")]
            }
            if fields.get("Types") == "deb" and suite in fields.get("Suites", "").split():
                return fields["URIs"].split()[0]
    for path in [Path("/etc/apt/sources.list"), *sorted(sources.glob("*.list"))]:
        for line in path.read_text().splitlines() if path.exists() else []:
            words = [word for word in line.split() if not word.startswith("[")]
            if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
                return words[1]
    raise ContainerError(f"this machine's apt sources name no archive for {suite}")


def rootfs_tarball() -> Path:
    """Return a tarball of a Debian root file system with `DEBIAN_PACKAGES` and this machine's CA bundle.

    Made by ``debootstrap`` on first use, for this machine's Debian release and architecture, and kept in
    the cache under the hash of what went into it.
    """
    suite = os_release().get("VERSION_CODENAME") or "bookworm"
    key = content_hash(suite, platform.machine(), "minbase", *DEBIAN_PACKAGES, CA_BUNDLE.read_bytes())
    tarball = CACHE / "rootfs" / f"debian-{suite}-{key}.tar"
    if tarball.exists():
        return tarball
    if shutil.which("debootstrap") is None:
        raise ContainerError(
            "no debootstrap to make the stand-in images' root file system (apt-get install it)"
        )
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tarball.parent) as scratch:
        target = Path(scratch) / "rootfs"
        command = [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(DEBIAN_PACKAGES)}",
            suite,
            str(target),
            debian_mirror(suite),
        ]
        print(f"building the stand-ins' root file system: {' '.join(command)}", file=sys.stderr, flush=True)
        completed = subprocess.run(command, capture_output=True, timeout=DEBOOTSTRAP_TIMEOUT, check=False)
        if completed.returncode != 0:
            output = (completed.stdout + completed.stderr).decode(errors="replace")
            raise ContainerError(f"debootstrap failed ({completed.returncode}):\n{output[-4000:]}")
        shutil.copyfile(CA_BUNDLE, target / CA_BUNDLE.relative_to("/"))
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (target / leftover).glob("*"):
                if path.is_file():
                    path.unlink()
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(target), "-cf", str(partial), "."], check=True, timeout=600)
        partial.rename(tarball)
    return tarball


# Images ----------------------------------------------------------------------------------------------------


def base_image() -> str:
    """Return the stand-ins' base image, imported from the root file system unless the daemon has it."""
    tarball = rootfs_tarball()
    image = f"{STANDIN_REPOSITORY}/debian:{tarball.stem.rpartition('-')[2]}"
    if not image_present(image):
        docker("import", "--change", 'CMD ["/bin/sh"]', "-", image, timeout=BUILD_TIMEOUT, stdin=tarball)
    return image


def build(
    name: str, directory: Path, arguments: Mapping[str, str], extra_files: tuple[Path, ...] = ()
) -> str:
    """Build the image in *directory* (plus *extra_files*) with build *arguments*, unless built before.

    Returns:
        Its name, tagged with the hash of its files and arguments.
    """
    files = sorted(path for path in directory.iterdir() if path.is_file()) + list(extra_files)
    tag = content_hash(
        json.dumps(dict(arguments), sort_keys=True),
        *(part for path in files for part in (path.name, path.read_bytes())),
    )
    image = f"{STANDIN_REPOSITORY}/{name}:{tag}"
    if image_present(image):
        return image
    with tempfile.TemporaryDirectory() as context:
        for path in files:
            shutil.copy2(path, Path(context) / path.name)
        flags = [word for name_value in arguments.items() for word in ("--build-arg", "=".join(name_value))]
        print(f"building the stand-in image {image}", file=sys.stderr, flush=True)
        docker("build", "--quiet", *flags, "--tag", image, context, timeout=BUILD_TIMEOUT)
    return image


def real_image(role: str) -> str:
    """Return the registry image that compose.yaml or the Dockerfile names for *role*."""
    if role == "python":
        return base_images()[0]
    image = services()[role]["image"]
    assert isinstance(image, str)
    return image


@functools.cache
def standin_image(role: str) -> str:
    """Return the stand-in image for *role*, building what it needs.

    The roles: python, redis and postgres; otlp, the OTLP receiver, which stands in for the collector
    (otel-collector) and for Jaeger (it takes what the collector would send).
    """
    if role in ("otlp", "otel-collector", "jaeger"):
        python = image_for("python")  # before the lock, which building the python stand-in takes too
        with machine_lock("build", LOCK_TIMEOUT):
            return build(
                "otlp", STANDINS / "otlp", {"PYTHON_IMAGE": python}, (TESTS / "tracing" / "otlp_receiver.py",)
            )
    with machine_lock("build", LOCK_TIMEOUT):
        return build(role, STANDINS / role, {"BASE_IMAGE": base_image()})


def image_for(role: str) -> str:
    """Return the real image for *role* when it is here or can be pulled, else its stand-in."""
    real = real_image(role)
    return real if pullable(real) else standin_image(role)


def compose_images(*, receiver_as_collector: bool) -> dict[str, str]:
    """Return compose.yaml's image variables: the real images where they can be had, else stand-ins.

    Args:
        receiver_as_collector: run the OTLP receiver in the collector's place even when the real collector
            could be pulled (the tests read what it received).
    """
    collector = "otlp" if receiver_as_collector else "otel-collector"
    return {
        "PYTHON_IMAGE": image_for("python"),
        "REDIS_IMAGE": image_for("redis"),
        "POSTGRES_IMAGE": image_for("postgres"),
        "COLLECTOR_IMAGE": standin_image(collector) if receiver_as_collector else image_for(collector),
        "JAEGER_IMAGE": image_for("jaeger"),
    }


def compose_command() -> list[str]:
    """Return Compose v2 (`docker compose`) when the docker command has it, else Debian's docker-compose."""
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30, check=False)
    if probe.returncode == 0:
        return ["docker", "compose"]
    found = shutil.which("docker-compose")
    if found is None:
        raise ContainerError("neither `docker compose` nor docker-compose is installed")
    return [found]


# Redis and PostgreSQL for the fixtures ---------------------------------------------------------------------


def answers(address: tuple[str, int]) -> bool:
    """Tell whether something accepts a TCP connection at *address* within a second."""
    try:
        with socket.create_connection(address, timeout=1.0):
            return True
    except OSError:
        return False


def announce(what: str, container_id: str, url: str) -> None:
    """Say on stderr which container serves what (the test of this path reads it)."""
    print(f"started {what} container {container_id[:12]} at {url}", file=sys.stderr, flush=True)


@contextmanager
def redis_container() -> Iterator[str]:
    """Run a Redis container for the block; yield its URL. It is removed however the block ends."""
    from testcontainers.community.redis import RedisContainer
    from testcontainers.core.config import testcontainers_config

    testcontainers_config.ryuk_disabled = True  # its reaper image cannot be pulled; the block removes all
    with RedisContainer(image_for("redis")) as container:
        url = f"redis://{container.get_container_host_ip()}:{container.get_exposed_port(6379)}"
        announce("Redis", container.get_container_id(), url)
        yield url


@contextmanager
def postgres_container() -> Iterator[str]:
    """Run a PostgreSQL container for the block; yield the URL of its ``postgres`` database."""
    from testcontainers.community.postgres import PostgresContainer
    from testcontainers.core.config import testcontainers_config

    testcontainers_config.ryuk_disabled = True
    server = PostgresContainer(
        image_for("postgres"), username="postgres", password=POSTGRES_PASSWORD, dbname="postgres", driver=None
    )
    with server as container:
        url = container.get_connection_url()
        announce("PostgreSQL", container.get_container_id(), url)
        yield url


@contextmanager
def backing_services() -> Iterator[dict[str, str]]:
    """Start Redis and PostgreSQL containers for what is neither configured nor answering; yield their URLs.

    Yields:
        ``REDIS_URL`` and ``DATABASE_URL`` for the containers started (nothing for a service that is
        configured or answers on its default port), for the caller to put in the environment.
    """
    force = os.environ.get(FORCE) == "always"
    needed = {
        "REDIS_URL": (DEFAULT_REDIS, redis_container),
        "DATABASE_URL": (DEFAULT_POSTGRES, postgres_container),
    }
    with ExitStack() as stack:
        found: dict[str, str] = {}
        for variable, (address, container) in needed.items():
            if force or (variable not in os.environ and not answers(address)):
                if (reason := unavailable_reason()) is not None:
                    print(
                        f"{variable} is unset and nothing answers; no container either: {reason}",
                        file=sys.stderr,
                    )
                    continue
                found[variable] = stack.enter_context(container())
        yield found


def main(arguments: list[str]) -> None:
    """Replace this process with compose on compose.yaml, project arq-mediator, on the images to be had."""
    if (reason := unavailable_reason()) is not None:
        sys.exit(f"no containers here: {reason}")
    environment = os.environ | compose_images(receiver_as_collector=False)
    command = [*compose_command(), "-p", "arq-mediator", *arguments]
    print("+", " ".join(command), flush=True)
    os.execvpe(command[0], command, environment)


if __name__ == "__main__":
    main(sys.argv[1:])
