"""Static checks of the container deployment: Dockerfile, .dockerignore, compose.yaml and otel-collector.yaml.

They read the files (variables at their defaults) and hold them against the compose specification's JSON
schema, the file system, the code (its modules, worker profiles and environment reads) and each other, so
they run where no container engine does; `test_compose_stack.py` runs the stack for real.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.resources
import importlib.util
import json
import re
import shlex
import tomllib
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
from jsonschema import Draft202012Validator
from jsonschema.validators import validator_for
from services.worker.entrypoint import parse as parse_worker_arguments
from services.worker.profiles import PROFILES, ConfigurationError, configure
from uvicorn.main import main as uvicorn_command

from arq_mediator._sentinel import parse_sentinel_url
from tests.deploy.files import (
    COLLECTOR_FILE,
    COMPOSE_FILE,
    ROOT,
    SENTINEL_ENV_FILE,
    SENTINEL_FILE,
    base_images,
    command_of,
    compose,
    compose_as_written,
    depends_on,
    dockerfile,
    env_file,
    environment_of,
    excluded_from_context,
    has_healthcheck,
    image_problem,
    load_yaml,
    mounts_of,
    names_the_code_reads,
    seconds,
    sentinel_directives,
    services,
    variables_in,
)

# The compose specification's schema, as the check-jsonschema package ships it (vendored from compose-spec).
SCHEMA_DISTRIBUTION = "check-jsonschema"
SCHEMA_PACKAGE = "check_jsonschema.builtin_schemas.vendor"
SCHEMA_RESOURCE = "compose-spec.json"

WORKERS = tuple(f"worker-{profile}" for profile in PROFILES)
APP_SERVICES = ("api", *WORKERS)
STACK = {"redis", "postgres", *APP_SERVICES, "otel-collector", "jaeger"}
SENTINELS = ("sentinel-1", "sentinel-2", "sentinel-3")
# What the `sentinel` profile adds: a replica of redis and three sentinels watching it.
SENTINEL_PROFILE = {"redis-replica", *SENTINELS}
COLLECTOR = "otel-collector"
JAEGER = "jaeger"
# The standard variables the OpenTelemetry SDK reads, which no `os.environ` call of ours names.
OTEL_SDK_VARIABLES = frozenset(
    {
        "OTEL_SERVICE_NAME",
        "OTEL_RESOURCE_ATTRIBUTES",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
        "OTEL_TRACES_SAMPLER",
        "OTEL_TRACES_SAMPLER_ARG",
        "OTEL_TRACES_EXPORTER",
        "OTEL_METRICS_EXPORTER",
        "OTEL_LOGS_EXPORTER",
        "OTEL_METRIC_EXPORT_INTERVAL",
        "OTEL_PROPAGATORS",
        "OTEL_SDK_DISABLED",
    }
)
# What every app service must set: where the queues, the data and the collector are, and who it is.
REQUIRED_APP_VARIABLES = (
    "REDIS_URL",
    "DATABASE_URL",
    "OTEL_SERVICE_NAME",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
)
DEPENDS_ON_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
DOCKER_DEFAULT_STOP_GRACE = 10.0


# Helpers ---------------------------------------------------------------------------------------------------


def uvicorn_options(arguments: Sequence[str]) -> dict[str, Any]:
    """Return uvicorn's options for *arguments*, parsed by uvicorn's own command line (nothing runs)."""
    try:
        context = uvicorn_command.make_context("uvicorn", list(arguments))
    except click.ClickException as error:
        pytest.fail(f"uvicorn rejects {shlex.join(arguments)}: {error.format_message()}")
    return dict(context.params)


def check_command(argv: Sequence[str], where: str) -> None:
    """Fail unless *argv* runs a module that exists, with arguments its command line accepts."""
    assert argv[:2] in (["python", "-m"], ["python3", "-m"]), (
        f"{where}: {shlex.join(argv)} is not `python -m MODULE ...`"
    )
    assert len(argv) >= 3, f"{where}: {shlex.join(argv)} names no module"
    module, arguments = argv[2], list(argv[3:])
    spec = importlib.util.find_spec(module)
    assert spec is not None, f"{where}: there is no module {module}"
    if spec.submodule_search_locations is not None:
        assert importlib.util.find_spec(f"{module}.__main__") is not None, (
            f"{where}: {module} is a package without __main__, so `python -m {module}` cannot run it"
        )
    if module == "uvicorn":
        target = uvicorn_options(arguments)["app"]
        module_name, colon, attribute = target.partition(":")
        assert colon, f"{where}: uvicorn's app {target!r} is not module:attribute"
        assert attribute, f"{where}: uvicorn's app {target!r} names no attribute"
        assert importlib.util.find_spec(module_name) is not None, f"{where}: there is no module {module_name}"
        namespace = vars(importlib.import_module(module_name))
        assert attribute in namespace or callable(namespace.get("__getattr__")), (
            f"{where}: {module_name} has no {attribute} and no module __getattr__ to build it"
        )
    elif module == "services.worker":
        try:
            profile = parse_worker_arguments(arguments).profile
        except SystemExit:
            pytest.fail(f"{where}: the worker's command line rejects {shlex.join(arguments)}")
        assert profile in PROFILES, f"{where}: worker profile {profile!r} is not one of {', '.join(PROFILES)}"
    else:
        pytest.fail(f"{where}: no check knows the arguments of {module}; add one to this test")


def healthcheck_url(service: dict[str, Any], name: str) -> str:
    """Return the one URL the service's health check requests, after checking its Python code compiles."""
    test = service["healthcheck"]["test"]
    assert isinstance(test, list), f"{name}: health check {test!r} is not a list"
    assert test[:3] in (["CMD", "python", "-c"], ["CMD", "python3", "-c"]), (
        f"{name}: health check {test!r} is not `python -c CODE` in exec form"
    )
    assert len(test) == 4, f"{name}: health check {test!r} has arguments after its code"
    compile(test[3], f"<{name} health check>", "exec")
    urls = re.findall(r"https?://[^\s'\"]+", test[3])
    assert len(urls) == 1, f"{name}: health check should request one URL, found {urls}"
    return str(urls[0])


def image_repository(image: str) -> str:
    """Return the image reference without its tag or digest."""
    name = image.partition("@")[0]
    head, _, last = name.rpartition("/")
    return f"{head}/{last.partition(':')[0]}" if head else last.partition(":")[0]


def collector() -> dict[str, Any]:
    """Return the collector's configuration."""
    return load_yaml(COLLECTOR_FILE)


def component_type(component_id: str) -> str:
    """Return a collector component's type: ``otlp`` for ``otlp/jaeger``."""
    return component_id.partition("/")[0]


def endpoint_port(endpoint: str) -> tuple[str, int]:
    """Return the host and port of a collector endpoint ``host:port``."""
    host, colon, port = endpoint.rpartition(":")
    assert colon, f"endpoint {endpoint!r} names no port"
    assert port.isdigit(), f"endpoint {endpoint!r} has port {port!r}"
    return host, int(port)


def published_ports(service: dict[str, Any]) -> list[tuple[str | None, int]]:
    """Return the service's published ports as (host address, container port)."""
    found: list[tuple[str | None, int]] = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            found.append((entry.get("host_ip"), int(entry["target"])))
            continue
        assert isinstance(entry, str), f"port {entry!r} is not a quoted string (YAML may misread it)"
        address, _, rest = entry.rpartition(":")
        host_ip = address.rpartition(":")[0] if address.count(":") == 1 else None
        found.append((host_ip, int(rest.partition("/")[0])))
    return found


# compose.yaml: the specification -------------------------------------------------------------------------


def test_compose_file_matches_the_compose_specification() -> None:
    """compose.yaml validates against the compose specification's JSON schema."""
    schema = json.loads(importlib.resources.files(SCHEMA_PACKAGE).joinpath(SCHEMA_RESOURCE).read_text())
    validator_class = validator_for(schema)
    assert validator_class is Draft202012Validator, f"the schema's draft changed: {schema.get('$schema')}"
    validator_class.check_schema(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    errors = sorted(
        validator.iter_errors(compose()), key=lambda error: [str(part) for part in error.absolute_path]
    )
    version = importlib.metadata.version(SCHEMA_DISTRIBUTION)
    assert not errors, (
        f"compose.yaml breaks the compose specification (from {SCHEMA_DISTRIBUTION} {version}):\n"
        + (
            "\n".join(
                f"  {'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}" for error in errors
            )
        )
    )


def test_compose_file_has_no_obsolete_version_key() -> None:
    """compose.yaml has no `version` key, which the compose specification made obsolete."""
    assert "version" not in compose()


def test_compose_defines_the_stack_of_the_design() -> None:
    """By default: redis, postgres, the API, a worker per profile, the collector and Jaeger, no more.

    The `sentinel` profile adds a replica and three sentinels, and nothing else has a profile.
    """
    defined = services()
    assert {name for name, service in defined.items() if "profiles" not in service} == STACK
    profiled = {name: service["profiles"] for name, service in defined.items() if "profiles" in service}
    assert profiled == {name: ["sentinel"] for name in SENTINEL_PROFILE}


def test_app_services_share_one_image_built_from_the_dockerfile() -> None:
    """The API and every worker are built from the same build context, which holds the Dockerfile."""
    defined = services()
    builds = {name: defined[name].get("build") for name in APP_SERVICES}
    assert len({json.dumps(build, sort_keys=True) for build in builds.values()}) == 1, builds
    build = builds["api"]
    assert build is not None, "the API has no build"
    context = build if isinstance(build, str) else build.get("context", ".")
    dockerfile_name = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    assert (COMPOSE_FILE.parent / context / dockerfile_name).is_file()
    others = {name for name, service in defined.items() if "build" in service} - set(APP_SERVICES)
    assert not others, f"only the app services are built from this project, not {others}"


# compose.yaml: files, commands, environment ---------------------------------------------------------------


def test_build_contexts_and_mounted_host_paths_exist() -> None:
    """Every build context and every bind-mounted host file or directory exists, relative to compose.yaml."""
    missing: list[str] = []
    for name, service in services().items():
        build = service.get("build")
        if build is not None:
            context = build if isinstance(build, str) else build.get("context", ".")
            if not (COMPOSE_FILE.parent / context).is_dir():
                missing.append(f"{name}: build context {context}")
        missing.extend(
            f"{name}: bind mount source {mount.source}"
            for mount in mounts_of(service)
            if mount.kind == "bind" and not (COMPOSE_FILE.parent / mount.source).exists()
        )
    assert not missing, missing


def test_named_volumes_are_declared_and_used() -> None:
    """Every named volume a service mounts is declared at the top level, and every declared one is mounted."""
    declared = set(compose().get("volumes") or {})
    mounted = {mount.source for service in services().values() for mount in mounts_of(service)}
    mounted_named = {
        mount.source
        for service in services().values()
        for mount in mounts_of(service)
        if mount.kind == "volume"
    }
    assert mounted_named <= declared, f"undeclared volumes: {mounted_named - declared}"
    assert declared <= mounted, f"declared volumes that no service mounts: {declared - mounted}"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_command_names_a_real_module(name: str) -> None:
    """The service's command runs a module that exists, with arguments its command line accepts."""
    check_command(command_of(services()[name]), name)


@pytest.mark.parametrize("profile", PROFILES)
def test_each_worker_runs_the_profile_its_name_says(profile: str) -> None:
    """worker-<profile> runs `python -m services.worker <profile>` and reports itself as worker-<profile>."""
    name = f"worker-{profile}"
    worker = services()[name]
    assert command_of(worker) == ["python", "-m", "services.worker", profile]
    assert environment_of(worker)["OTEL_SERVICE_NAME"] == name


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_environment_names_are_ones_the_code_reads(name: str) -> None:
    """Every variable set for the service is read by the code, or is a standard OpenTelemetry SDK variable."""
    read = names_the_code_reads()
    unknown = sorted(
        variable
        for variable in environment_of(services()[name])
        if variable not in read and variable not in OTEL_SDK_VARIABLES
    )
    assert not unknown, f"{name} sets variables that nothing reads: {', '.join(unknown)}"


def test_the_environment_scan_finds_what_the_services_read() -> None:
    """The scan of the code finds the variables the settings, the worker profiles and the entrypoint read."""
    expected = {
        "REDIS_URL",
        "DATABASE_URL",
        "WORK_SCALE",
        "EMAIL_FAILURE_RATE",
        "OTEL_SERVICE_NAME",
        "WORKER_PROFILE",
        "WORKER_NAME",
        "WORKER_QUEUES",
        "MAX_CONCURRENT_JOBS",
        "WORKER_HTTP_PORT",
        "WORKER_HTTP_HOST",
        "LOG_LEVEL",
    }
    assert expected <= names_the_code_reads(), expected - names_the_code_reads()


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_set_their_whole_environment_in_the_file(name: str) -> None:
    """The service sets its Redis, database and telemetry variables with values, and reads no env_file."""
    service = services()[name]
    assert "env_file" not in service, f"{name}: an env_file hides variables from these checks"
    environment = environment_of(service)
    missing = [variable for variable in REQUIRED_APP_VARIABLES if not environment.get(variable)]
    assert not missing, f"{name} does not set {', '.join(missing)}"
    assert environment["OTEL_SERVICE_NAME"] == name
    passed_through = [variable for variable, value in environment.items() if value is None]
    assert not passed_through, f"{name} takes {passed_through} from the host, which may not have them"


@pytest.mark.parametrize("name", WORKERS)
def test_worker_environment_is_a_configuration_the_worker_accepts(name: str) -> None:
    """The worker's profile and environment make a valid configuration with its health server on."""
    worker = services()[name]
    profile = parse_worker_arguments(command_of(worker)[3:]).profile
    try:
        config = configure(profile, {k: v for k, v in environment_of(worker).items() if v is not None})
    except ConfigurationError as error:
        pytest.fail(f"{name}: {error}")
    assert config.http_port is not None, f"{name} sets no WORKER_HTTP_PORT, so its health check has no server"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_urls_point_at_compose_services(name: str) -> None:
    """REDIS_URL and DATABASE_URL name compose services, and the database URL has postgres's credentials."""
    defined = services()
    environment = environment_of(defined[name])
    redis_url = urlsplit(environment["REDIS_URL"] or "")
    assert redis_url.scheme == "redis", environment["REDIS_URL"]
    assert redis_url.hostname in defined, environment["REDIS_URL"]
    database_url = urlsplit(environment["DATABASE_URL"] or "")
    assert database_url.scheme == "postgresql+asyncpg", "the services use SQLAlchemy's asyncpg driver"
    assert database_url.hostname in defined, environment["DATABASE_URL"]
    database = environment_of(defined[database_url.hostname])
    assert database_url.username == (database.get("POSTGRES_USER") or "postgres")
    assert database_url.password == database["POSTGRES_PASSWORD"]
    assert database_url.path.lstrip("/") == database["POSTGRES_DB"]


# compose.yaml: start order, images, ports, health --------------------------------------------------------


def test_depends_on_names_defined_services_with_valid_conditions() -> None:
    """Every depends_on target is a service compose defines, with a condition compose knows."""
    defined = services()
    problems = [
        f"{name} -> {target} ({condition})"
        for name, service in defined.items()
        for target, condition in depends_on(service).items()
        if target not in defined or condition not in DEPENDS_ON_CONDITIONS
    ]
    assert not problems, problems


def test_service_healthy_is_only_awaited_on_services_with_a_healthcheck() -> None:
    """A depends_on condition service_healthy names only services that compose gives a health check."""
    defined = services()
    problems = [
        f"{name} waits for {target} to be healthy, which has no health check"
        for name, service in defined.items()
        for target, condition in depends_on(service).items()
        if condition == "service_healthy" and not has_healthcheck(defined.get(target, {}))
    ]
    assert not problems, problems


def test_depends_on_has_no_cycle() -> None:
    """The services' start order has no cycle."""
    graph = {name: set(depends_on(service)) for name, service in services().items()}
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"cycle: {' -> '.join((*path, name))}"
        if name in done:
            return
        for target in graph.get(name, ()):
            visit(target, (*path, name))
        done.add(name)

    for name in graph:
        visit(name, ())


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_wait_for_their_backends(name: str) -> None:
    """The service waits for Redis and PostgreSQL to be healthy and for the collector to start."""
    service = services()[name]
    environment = environment_of(service)
    exporter_host = urlsplit(environment["OTEL_EXPORTER_OTLP_ENDPOINT"] or "").hostname
    expected = {
        urlsplit(environment["REDIS_URL"] or "").hostname: "service_healthy",
        urlsplit(environment["DATABASE_URL"] or "").hostname: "service_healthy",
        exporter_host: "service_started",
    }
    assert depends_on(service) == expected


def test_images_are_pinned() -> None:
    """Every service has an image or a build, and every image has an explicit version tag, never latest."""
    problems: list[str] = []
    for name, service in services().items():
        image = service.get("image")
        if image is None:
            if "build" not in service:
                problems.append(f"{name}: neither image nor build")
        elif (problem := image_problem(str(image))) is not None:
            problems.append(f"{name}: {problem}")
    assert not problems, problems


def test_images_and_host_ports_can_be_substituted_without_editing_the_file() -> None:
    """Every pulled image and published host port comes from a variable whose default is the pinned value,
    and the app image's base is the Dockerfile's own default."""
    written = compose_as_written()["services"]
    for name, service in written.items():
        if "image" in service:
            assert re.fullmatch(r"\$\{[A-Z_]+_IMAGE:-[^}]+\}", service["image"]), (
                f"{name}: image {service['image']} cannot be substituted from the environment"
            )
        for port in service.get("ports", []):
            # "127.0.0.1:${API_PORT:-8000}:8000": the host port is between the address and the target.
            host_port = ":".join(str(port).split(":")[1:-1])
            assert re.fullmatch(r"\$\{[A-Z_]+_PORT:-\d+\}", host_port), (
                f"{name}: host port in {port} cannot be substituted from the environment"
            )
    base_argument = services()["api"]["build"]["args"]["PYTHON_IMAGE"]
    assert [base_argument] == base_images(), "compose.yaml's PYTHON_IMAGE default is not the Dockerfile's"
    assert variables_in(compose_as_written()) == {
        "PYTHON_IMAGE",
        "REDIS_IMAGE",
        "POSTGRES_IMAGE",
        "COLLECTOR_IMAGE",
        "JAEGER_IMAGE",
        "API_PORT",
        "JAEGER_UI_PORT",
        "APP_REDIS_URL",
    }


def test_published_ports_bind_localhost_only() -> None:
    """Every published port binds 127.0.0.1, and only the API and Jaeger's UI are published."""
    published: dict[str, list[int]] = {}
    for name, service in services().items():
        for host_ip, container_port in published_ports(service):
            assert host_ip == "127.0.0.1", (
                f"{name} publishes {container_port} on {host_ip or 'every address'}"
            )
            published.setdefault(name, []).append(container_port)
    assert published == {"api": [8000], JAEGER: [16686]}


def test_api_listens_where_it_is_published_and_checked() -> None:
    """The API listens on all interfaces at the port that compose publishes and its health check requests."""
    api = services()["api"]
    options = uvicorn_options(command_of(api)[3:])
    assert options["host"] == "0.0.0.0"
    assert [port for _, port in published_ports(api)] == [options["port"]]
    url = urlsplit(healthcheck_url(api, "api"))
    assert (url.hostname, url.port, url.path) == ("127.0.0.1", options["port"], "/health")


@pytest.mark.parametrize("name", WORKERS)
def test_worker_health_check_requests_its_health_server(name: str) -> None:
    """The worker's health check requests /health on the port WORKER_HTTP_PORT gives its health server."""
    worker = services()[name]
    port = int(environment_of(worker)["WORKER_HTTP_PORT"] or "0")
    url = urlsplit(healthcheck_url(worker, name))
    assert (url.hostname, url.port, url.path) == ("127.0.0.1", port, "/health")


def test_backing_services_have_health_checks() -> None:
    """Redis answers `redis-cli ping` with append-only persistence on, and PostgreSQL answers pg_isready."""
    redis, postgres = services()["redis"], services()["postgres"]
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"])
    command = command_of(redis)
    assert command[0] == "redis-server"
    assert command[command.index("--appendonly") + 1] == "yes"
    assert postgres["healthcheck"]["test"][1] == "pg_isready"


@pytest.mark.parametrize("name", WORKERS)
def test_worker_stop_grace_period_outlasts_its_drain(name: str) -> None:
    """Compose waits longer for a stopped worker than the worker's own drain of its running jobs."""
    worker = services()[name]
    profile = parse_worker_arguments(command_of(worker)[3:]).profile
    drain = configure(profile, {}).worker_settings().grace
    grace = (
        seconds(worker["stop_grace_period"]) if "stop_grace_period" in worker else DOCKER_DEFAULT_STOP_GRACE
    )
    assert grace > drain, f"{name} is killed {grace}s after SIGTERM, before its {drain}s drain ends"


def test_api_stop_grace_period_outlasts_its_graceful_shutdown() -> None:
    """Compose waits longer for a stopped API than uvicorn waits for its open requests."""
    api = services()["api"]
    timeout = uvicorn_options(command_of(api)[3:])["timeout_graceful_shutdown"]
    assert timeout is not None, (
        "without --timeout-graceful-shutdown one slow request holds up the stop until the kill"
    )
    grace = seconds(api["stop_grace_period"]) if "stop_grace_period" in api else DOCKER_DEFAULT_STOP_GRACE
    assert grace > timeout


# Dockerfile ------------------------------------------------------------------------------------------------


def test_dockerfile_base_image_is_pinned() -> None:
    """Every FROM of the Dockerfile names an image with an explicit version tag."""
    bases = base_images()
    assert bases, "the Dockerfile has no FROM"
    problems = [problem for base in bases if (problem := image_problem(base)) is not None]
    assert not problems, problems


def test_dockerfile_installs_the_project_with_the_services_extra() -> None:
    """The Dockerfile pip-installs the project with its services extra, without keeping pip's cache."""
    installs = []
    for instruction in dockerfile():
        if instruction.keyword != "RUN":
            continue
        for command in re.split(r"&&|;", instruction.arguments):
            words = shlex.split(command)
            if words[:2] == ["pip", "install"] or words[1:4] == ["-m", "pip", "install"]:
                installs.append(words)
    assert any(".[services]" in words for words in installs), installs
    assert all("--no-cache-dir" in words for words in installs), installs


def test_dockerfile_copy_sources_exist_and_reach_the_build_context() -> None:
    """Every COPY source exists, and .dockerignore excludes neither it nor a Python file in it."""
    sources = [
        source
        for instruction in dockerfile()
        if instruction.keyword in {"COPY", "ADD"}
        for source in [word for word in instruction.words() if not word.startswith("--")][:-1]
    ]
    assert sources, "the Dockerfile copies nothing"
    for source in sources:
        path = ROOT / source
        assert path.exists(), f"COPY {source}: no such file or directory"
        relative = path.resolve().relative_to(ROOT).as_posix()
        assert not excluded_from_context(relative), f"COPY {source}: .dockerignore excludes it"
        if path.is_dir():
            excluded = [
                file.relative_to(ROOT).as_posix()
                for file in path.rglob("*.py")
                if excluded_from_context(file.relative_to(ROOT).as_posix())
            ]
            assert not excluded, f"COPY {source}: .dockerignore excludes {excluded}"


def test_dockerfile_copies_what_the_install_and_the_commands_need() -> None:
    """The image gets pyproject.toml, its readme, the library's package and the services package."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    needed = {
        "pyproject.toml",
        pyproject["project"]["readme"],
        *pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"],
        "services",
    }
    copied = {
        source.removeprefix("./").rstrip("/")
        for instruction in dockerfile()
        if instruction.keyword == "COPY"
        for source in [word for word in instruction.words() if not word.startswith("--")][:-1]
    }
    uncovered = [
        path
        for path in needed
        if not any(path == source or path.startswith(f"{source}/") for source in copied)
    ]
    assert not uncovered, f"the Dockerfile does not copy {uncovered}"


def test_dockerfile_default_command_serves_the_api() -> None:
    """The Dockerfile's CMD is an exec form that serves a real app module on 0.0.0.0 at the exposed port."""
    commands = [instruction for instruction in dockerfile() if instruction.keyword == "CMD"]
    assert len(commands) == 1, "the Dockerfile should have one CMD"
    assert commands[0].arguments.startswith("["), (
        "CMD in shell form runs under /bin/sh, which gets the signals"
    )
    argv = commands[0].words()
    check_command(argv, "Dockerfile CMD")
    options = uvicorn_options(argv[3:])
    exposed = [
        int(word.partition("/")[0]) for i in dockerfile() if i.keyword == "EXPOSE" for word in i.words()
    ]
    assert options["host"] == "0.0.0.0"
    assert exposed == [options["port"]]


def test_dockerfile_runs_as_a_non_root_user() -> None:
    """The image's last USER is neither root nor uid 0."""
    users = [instruction.arguments for instruction in dockerfile() if instruction.keyword == "USER"]
    assert users, "the image runs as root"
    assert users[-1].partition(":")[0] not in {"root", "0"}


def test_dockerfile_makes_python_output_unbuffered() -> None:
    """The image sets PYTHONUNBUFFERED, so logs reach `docker compose logs` as they are written."""
    variables = dict(
        word.partition("=")[::2]
        for instruction in dockerfile()
        if instruction.keyword == "ENV"
        for word in instruction.words()
    )
    assert variables.get("PYTHONUNBUFFERED") == "1"


# otel-collector.yaml ---------------------------------------------------------------------------------------


def test_collector_pipelines_reference_only_defined_components() -> None:
    """Pipelines use only defined components, and each has at least one receiver and one exporter."""
    config = collector()
    problems: list[str] = []
    for pipeline, stages in config["service"]["pipelines"].items():
        if component_type(pipeline) not in {"traces", "metrics", "logs"}:
            problems.append(f"pipeline {pipeline}: not traces, metrics or logs")
        for kind in ("receivers", "processors", "exporters"):
            problems.extend(
                f"pipeline {pipeline}: {kind[:-1]} {component} is not defined"
                for component in stages.get(kind, [])
                if component not in (config.get(kind) or {})
            )
        if not stages.get("receivers") or not stages.get("exporters"):
            problems.append(f"pipeline {pipeline}: needs a receiver and an exporter")
    assert not problems, problems


def test_collector_uses_every_defined_component() -> None:
    """Every defined receiver, processor, exporter and extension is used by a pipeline or the service."""
    config = collector()
    pipelines = config["service"]["pipelines"].values()
    unused = [
        f"{kind[:-1]} {component}"
        for kind in ("receivers", "processors", "exporters")
        for component in config.get(kind) or {}
        if not any(component in stages.get(kind, []) for stages in pipelines)
    ]
    extensions = set(config.get("extensions") or {})
    unused.extend(f"extension {name}" for name in extensions - set(config["service"].get("extensions", [])))
    assert not unused, unused
    assert set(config["service"].get("extensions", [])) <= extensions


def test_collector_has_traces_and_metrics_pipelines() -> None:
    """Traces go through the batch processor to Jaeger's OTLP exporter and debug; metrics go to debug."""
    pipelines = collector()["service"]["pipelines"]
    assert pipelines["traces"]["processors"] == ["batch"]
    assert set(pipelines["traces"]["exporters"]) == {"otlp/jaeger", "debug"}
    assert pipelines["metrics"]["exporters"] == ["debug"]


def test_collector_otlp_receiver_binds_all_interfaces() -> None:
    """The OTLP receiver listens on 0.0.0.0, gRPC on 4317 and HTTP on 4318 (its default is localhost only)."""
    receivers = {
        name: receiver
        for name, receiver in collector()["receivers"].items()
        if component_type(name) == "otlp"
    }
    assert receivers, "no otlp receiver"
    for name, receiver in receivers.items():
        protocols = receiver["protocols"]
        assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317", name
        assert protocols["http"]["endpoint"] == "0.0.0.0:4318", name


def test_collector_exporter_targets_a_compose_service_over_insecure_grpc() -> None:
    """The OTLP exporter sends to Jaeger's OTLP gRPC port, a service compose defines, without TLS."""
    exporters = {
        name: exporter
        for name, exporter in collector()["exporters"].items()
        if component_type(name) == "otlp"
    }
    assert exporters, "no otlp exporter"
    for name, exporter in exporters.items():
        host, port = endpoint_port(exporter["endpoint"])
        assert host in services(), f"{name} sends to {host}, which compose does not define"
        assert (host, port) == (JAEGER, 4317)
        assert exporter["tls"]["insecure"] is True, f"{name}: the compose network carries plain gRPC"


def test_compose_mounts_the_collector_config_where_its_command_reads_it() -> None:
    """The collector service mounts otel-collector.yaml read-only at the path its --config names."""
    service = services()[COLLECTOR]
    arguments = command_of(service)
    configs = [word.removeprefix("--config=") for word in arguments if word.startswith("--config=")]
    configs += [arguments[i + 1] for i, word in enumerate(arguments[:-1]) if word == "--config"]
    assert len(configs) == 1, f"the collector's command should name one --config, got {arguments}"
    mounts = [
        mount
        for mount in mounts_of(service)
        if mount.kind == "bind" and (COMPOSE_FILE.parent / mount.source).resolve() == COLLECTOR_FILE
    ]
    assert [(mount.target, mount.read_only) for mount in mounts] == [(configs[0], True)]


def test_app_exporter_endpoint_is_the_collectors_receiver() -> None:
    """OTEL_EXPORTER_OTLP_ENDPOINT names the collector service and the receiver port of its protocol."""
    protocols = collector()["receivers"]["otlp"]["protocols"]
    receiver_for = {"http/protobuf": "http", "http/json": "http", "grpc": "grpc"}
    for name in APP_SERVICES:
        environment = environment_of(services()[name])
        endpoint = urlsplit(environment["OTEL_EXPORTER_OTLP_ENDPOINT"] or "")
        protocol = environment["OTEL_EXPORTER_OTLP_PROTOCOL"] or ""
        assert protocol in receiver_for, f"{name}: unknown OTLP protocol {protocol}"
        _, port = endpoint_port(protocols[receiver_for[protocol]]["endpoint"])
        assert (endpoint.scheme, endpoint.hostname, endpoint.port) == ("http", COLLECTOR, port), name


def test_observability_images_are_the_ones_the_configuration_is_written_for() -> None:
    """The collector is the contrib distribution (config under /etc/otelcol-contrib) and Jaeger is v2.1+."""
    defined = services()
    assert image_repository(defined[COLLECTOR]["image"]) == "otel/opentelemetry-collector-contrib"
    jaeger = defined[JAEGER]["image"]
    assert image_repository(jaeger) == "jaegertracing/jaeger"
    version = tuple(int(part) for part in re.findall(r"\d+", jaeger.rpartition(":")[2])[:2])
    # v2.0.0's image listened for OTLP on localhost only; from v2.1.0 on it listens on 0.0.0.0 in a container.
    assert version[0] == 2, f"{jaeger} is not Jaeger v2"
    assert version >= (2, 1), f"{jaeger} takes no OTLP from other containers; use 2.1.0 or later"


# The `sentinel` profile: compose.sentinel.env, sentinel.conf ---------------------------------------------


def sentinel_monitor() -> tuple[str, str, int, int]:
    """Return what sentinel.conf monitors: master name, host, port and quorum."""
    monitors = [words[2:] for words in sentinel_directives() if words[:2] == ["sentinel", "monitor"]]
    assert len(monitors) == 1, f"sentinel.conf should monitor one master, found {monitors}"
    name, host, port, quorum = monitors[0]
    return name, host, int(port), int(quorum)


def sentinel_port() -> int:
    """Return the port sentinel.conf listens on."""
    ports = [int(words[1]) for words in sentinel_directives() if words[0] == "port"]
    assert len(ports) == 1, f"sentinel.conf should set one port, found {ports}"
    return ports[0]


def test_the_sentinel_env_file_turns_the_profile_on_and_points_every_app_at_the_sentinels() -> None:
    """With compose.sentinel.env, every app's REDIS_URL is a Sentinel URL of the profile's sentinels."""
    variables = env_file(SENTINEL_ENV_FILE)
    assert variables["COMPOSE_PROFILES"] == "sentinel"
    defined = compose(variables)["services"]
    master, _, _, _ = sentinel_monitor()
    for name in APP_SERVICES:
        redis_url = environment_of(defined[name])["REDIS_URL"] or ""
        assert redis_url == variables["APP_REDIS_URL"], name
        url = parse_sentinel_url(redis_url)
        assert sorted(url.sentinels) == [(sentinel, sentinel_port()) for sentinel in SENTINELS], name
        assert (url.master, url.db) == (master, 0), name


def test_the_sentinels_watch_the_redis_service_with_a_quorum_they_can_reach() -> None:
    """sentinel.conf monitors redis:6379 under the URL's name; a majority of the three is the quorum."""
    name, host, port, quorum = sentinel_monitor()
    assert host in services(), f"sentinel.conf monitors {host}, which compose does not define"
    assert "profiles" not in services()[host], f"{host} is not in the default stack"
    assert port == 6379
    assert len(SENTINELS) // 2 < quorum <= len(SENTINELS)
    directives = sentinel_directives()
    assert ["sentinel", "resolve-hostnames", "yes"] in directives, "the master is named by host name"
    assert ["sentinel", "announce-hostnames", "yes"] in directives, "clients must get names, not addresses"
    others = [words[2] for words in directives if words[0] == "sentinel" and len(words) == 4]
    assert set(others) == {name}, f"every per-master option should name {name}: {others}"


def test_each_redis_of_the_profile_announces_its_service_name_and_the_replica_follows_redis() -> None:
    """redis and redis-replica announce their own names; the replica is a replica of redis:6379."""
    _, host, port, _ = sentinel_monitor()
    for name in ("redis", "redis-replica"):
        command = command_of(services()[name])
        assert command[command.index("--replica-announce-ip") + 1] == name
        assert command[command.index("--appendonly") + 1] == "yes"
    replica = command_of(services()["redis-replica"])
    assert replica[replica.index("--replicaof") + 1 : replica.index("--replicaof") + 3] == [host, str(port)]


@pytest.mark.parametrize("name", SENTINELS)
def test_each_sentinel_runs_a_writable_copy_of_the_mounted_config(name: str) -> None:
    """A sentinel copies the read-only sentinel.conf it mounts, then runs redis-server --sentinel on that."""
    service = services()[name]
    [mount] = mounts_of(service)
    assert (COMPOSE_FILE.parent / mount.source).resolve() == SENTINEL_FILE
    assert mount.read_only
    shell, flag, script = command_of(service)
    assert (shell, flag) == ("sh", "-c")
    copy, run = script.split(" && ")
    _, source, target = shlex.split(copy)
    assert source == mount.target
    assert shlex.split(run) == ["exec", "redis-server", target, "--sentinel"]
    assert str(sentinel_port()) in " ".join(service["healthcheck"]["test"])
