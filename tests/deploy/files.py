"""Readers of the deployment files (Dockerfile, .dockerignore, compose.yaml, otel-collector.yaml) and of
the environment variable names the code reads, for the static checks in ``test_compose.py``.

They parse only what those files use, and strictly: anything they do not understand is an error.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "compose.yaml"
COLLECTOR_FILE = ROOT / "otel-collector.yaml"
SENTINEL_FILE = ROOT / "sentinel.conf"
SENTINEL_ENV_FILE = ROOT / "compose.sentinel.env"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
# The code whose environment reads count: the library and the services (not tests or examples).
CODE_DIRS = (ROOT / "src", ROOT / "services")


# YAML ------------------------------------------------------------------------------------------------------


def load_yaml(path: Path) -> dict[str, Any]:
    """Return the mapping at the top of the YAML file *path* (anchors and merge keys resolved)."""
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict), f"{path.name} is not a mapping at the top"
    return loaded


# `${NAME:-default}` / `${NAME-default}` / `${NAME}`, and `$$` for a literal dollar: the forms compose.yaml
# may use. A bare `$NAME` or any other `$` form is refused, so the checks never read an unresolved value.
_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<operator>:?-)(?P<default>[^}]*))?\}")


def interpolate(value: str, environment: Mapping[str, str]) -> str:
    """Return *value* with its variables substituted from *environment*, as compose substitutes them."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, default = match.group("name", "operator", "default")
        found = environment.get(name)
        if operator == ":-" and not found:
            return str(default)
        if operator == "-" and found is None:
            return str(default)
        return found or ""

    assert "$" not in _VARIABLE.sub("", value), f"{value!r} uses a variable form these checks do not read"
    return _VARIABLE.sub(substitute, value)


def env_file(path: Path) -> dict[str, str]:
    """Return the ``NAME=value`` lines of a compose env file; comments and blank lines are skipped."""
    variables: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, equals, value = line.partition("=")
        assert equals, f"{path.name}:{number}: {line!r} is not NAME=value"
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name), f"{path.name}:{number}: {name!r} is no name"
        variables[name] = value
    return variables


def sentinel_directives() -> list[list[str]]:
    """Return the directives of sentinel.conf, each split into its words."""
    lines = SENTINEL_FILE.read_text(encoding="utf-8").splitlines()
    return [shlex.split(line) for line in lines if line.strip() and not line.lstrip().startswith("#")]


def variables_in(value: Any) -> set[str]:
    """Return the names of the variables that the strings in *value* (nested lists and mappings) use."""
    if isinstance(value, str):
        return {match.group("name") for match in _VARIABLE.finditer(value) if match.group("name")}
    if isinstance(value, dict):
        return set().union(*(variables_in(item) for item in value.values()))
    if isinstance(value, list):
        return set().union(*(variables_in(item) for item in value))
    return set()


def _interpolated(value: Any, environment: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return interpolate(value, environment)
    if isinstance(value, dict):
        return {key: _interpolated(item, environment) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolated(item, environment) for item in value]
    return value


def compose_as_written() -> dict[str, Any]:
    """Return compose.yaml, freshly parsed, its variables not substituted."""
    return load_yaml(COMPOSE_FILE)


def compose(environment: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Return compose.yaml, freshly parsed, so no caller sees what another one changed.

    Its variables are substituted from *environment*; with none given, each takes its default, as on a
    machine that sets none of them.
    """
    resolved: dict[str, Any] = _interpolated(compose_as_written(), environment or {})
    return resolved


def services() -> dict[str, dict[str, Any]]:
    """Return compose.yaml's services by name."""
    found = compose().get("services")
    assert isinstance(found, dict), "compose.yaml has no services mapping"
    assert found, "compose.yaml defines no services"
    for name, service in found.items():
        assert isinstance(service, dict), f"service {name} is not a mapping"
    return found


def app_services() -> dict[str, dict[str, Any]]:
    """Return the services built from this project (the API and the workers)."""
    return {name: service for name, service in services().items() if "build" in service}


def command_of(service: Mapping[str, Any]) -> list[str]:
    """Return the service's command as an argument list (a string command is split as a shell would)."""
    command = service.get("command")
    if isinstance(command, str):
        return shlex.split(command)
    assert isinstance(command, list), f"command {command!r} is neither a string nor a list"
    assert all(isinstance(part, str) for part in command), f"command {command!r} has a part that is no string"
    return command


def environment_of(service: Mapping[str, Any]) -> dict[str, str | None]:
    """Return the service's environment by name; ``None`` for a name passed through from the host."""
    raw = service.get("environment", {})
    if isinstance(raw, list):
        entries = (str(item).partition("=") for item in raw)
        return {name: (value if equals else None) for name, equals, value in entries}
    assert isinstance(raw, dict), f"environment {raw!r} is neither a list nor a mapping"
    return {str(name): None if value is None else str(value) for name, value in raw.items()}


def depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    """Return the services this one depends on, with each one's condition."""
    raw = service.get("depends_on", {})
    if isinstance(raw, list):
        return dict.fromkeys(raw, "service_started")
    assert isinstance(raw, dict), f"depends_on {raw!r} is neither a list nor a mapping"
    return {name: (options or {}).get("condition", "service_started") for name, options in raw.items()}


def has_healthcheck(service: Mapping[str, Any]) -> bool:
    """Tell whether compose gives the service a health check that is not disabled."""
    check = service.get("healthcheck")
    if not isinstance(check, dict) or check.get("disable") in (True, "true"):
        return False
    test = check.get("test")
    return bool(test) and test not in (["NONE"], "NONE")


@dataclass(frozen=True, slots=True)
class Mount:
    """One entry of a service's ``volumes``: a bind mount of a host path, or a named volume."""

    kind: str  # "bind" or "volume"
    source: str
    target: str
    read_only: bool


def mounts_of(service: Mapping[str, Any]) -> list[Mount]:
    """Return the service's volumes, short syntax (``source:target[:mode]``) and long syntax alike."""
    found: list[Mount] = []
    for entry in service.get("volumes", []):
        if isinstance(entry, str):
            parts = entry.split(":")
            assert 2 <= len(parts) <= 3, (
                f"volume {entry!r} is not source:target[:mode] (anonymous volumes aside)"
            )
            source, target = parts[0], parts[1]
            modes = parts[2].split(",") if len(parts) == 3 else []
            kind = "bind" if source.startswith((".", "/", "~")) else "volume"
            found.append(Mount(kind, source, target, "ro" in modes))
        else:
            assert isinstance(entry, dict), f"volume {entry!r} is neither a string nor a mapping"
            found.append(
                Mount(entry["type"], entry["source"], entry["target"], bool(entry.get("read_only", False)))
            )
    return found


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)")
_UNIT_SECONDS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def seconds(duration: str) -> float:
    """Return a compose duration (``30s``, ``1m30s``) in seconds."""
    parts = _DURATION_PART.findall(duration)
    assert parts, f"{duration!r} is not a compose duration"
    assert "".join(number + unit for number, unit in parts) == duration, (
        f"{duration!r} is not a compose duration"
    )
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def image_problem(image: str) -> str | None:
    """Return why the image reference is not pinned to an explicit version, or ``None`` when it is."""
    if "$" in image:
        return f"{image}: the tag comes from a variable, which the file cannot pin"
    name, at, digest = image.partition("@")
    if at:
        return None if re.fullmatch(r"sha256:[0-9a-f]{64}", digest) else f"{image}: not a sha256 digest"
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"{image}: no tag, which means latest"
    tag = last.rpartition(":")[2]
    if not tag or tag == "latest":
        return f"{image}: tag {tag or '(empty)'} is not a version"
    if not re.search(r"\d", tag):
        return f"{image}: tag {tag} names no version"
    return None


# Dockerfile -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Instruction:
    """One Dockerfile instruction: its keyword (upper case) and the rest of its logical line."""

    keyword: str
    arguments: str

    def words(self) -> list[str]:
        """Return the arguments: the JSON (exec) form as written, the shell form split as a shell would."""
        if self.arguments.startswith("["):
            parsed = json.loads(self.arguments)
            assert isinstance(parsed, list), f"{self.keyword} {self.arguments} is not a JSON list"
            assert all(isinstance(word, str) for word in parsed), f"{self.keyword}: a word is no string"
            return parsed
        return shlex.split(self.arguments)


def dockerfile() -> list[Instruction]:
    """Return the Dockerfile's instructions, continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def base_images() -> list[str]:
    """Return the image every FROM of the Dockerfile names, its ``${ARG}`` taken at the ARG's default."""
    defaults: dict[str, str] = {}
    bases: list[str] = []
    for instruction in dockerfile():
        if instruction.keyword == "ARG":
            name, equals, default = instruction.arguments.partition("=")
            if equals:
                defaults[name.strip()] = default.strip()
        elif instruction.keyword == "FROM":
            image = next(word for word in instruction.words() if not word.startswith("--"))
            bases.append(interpolate(image, defaults))
    return bases


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """Return the .dockerignore rules in order: (is an exception ``!``, the pattern as a regex)."""
    rules: list[tuple[bool, re.Pattern[str]]] = []
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = str(PurePosixPath(line.removeprefix("!").strip().lstrip("/")))
        rules.append((exception, re.compile(_glob_regex(pattern))))
    return rules


def _glob_regex(pattern: str) -> str:
    # As Docker matches: `*` and `?` stay within a path segment, `**` crosses any number of them.
    out, index = "", 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out, index = out + "(?:.*/)?", index + 3
        elif pattern.startswith("**", index):
            out, index = out + ".*", index + 2
        elif pattern[index] == "*":
            out, index = out + "[^/]*", index + 1
        elif pattern[index] == "?":
            out, index = out + "[^/]", index + 1
        elif pattern[index] == "[":
            end = pattern.index("]", index)
            out, index = out + pattern[index : end + 1], end + 1
        else:
            out, index = out + re.escape(pattern[index]), index + 1
    return out


def excluded_from_context(path: str) -> bool:
    """Tell whether .dockerignore keeps *path* (relative to the context) out of the build context."""
    parts = PurePosixPath(path).parts
    excluded = False
    for exception, rule in dockerignore_patterns():
        # A rule that matches a parent directory applies to everything in it.
        if any(rule.fullmatch("/".join(parts[:end])) for end in range(1, len(parts) + 1)):
            excluded = not exception
    return excluded


# The code's environment reads ------------------------------------------------------------------------------


def _is_environ(node: ast.expr) -> bool:
    return (isinstance(node, ast.Name) and node.id == "environ") or (
        isinstance(node, ast.Attribute) and node.attr == "environ"
    )


def _environ_key(node: ast.AST) -> ast.expr | None:
    """Return the key of an environment read (``environ.get(K)``, ``environ[K]``, ``getenv(K)``,
    ``K in environ``), or ``None`` when *node* is no such read."""
    if isinstance(node, ast.Call) and node.args:
        function = node.func
        if isinstance(function, ast.Attribute) and function.attr == "get" and _is_environ(function.value):
            return node.args[0]
        if (isinstance(function, ast.Attribute) and function.attr == "getenv") or (
            isinstance(function, ast.Name) and function.id == "getenv"
        ):
            return node.args[0]
    if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and _is_environ(node.value):
        return node.slice
    if (
        isinstance(node, ast.Compare)
        and len(node.ops) == 1
        and isinstance(node.ops[0], ast.In | ast.NotIn)
        and _is_environ(node.comparators[0])
    ):
        return node.left
    return None


def _literal(node: ast.expr | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def names_read_by(tree: ast.Module) -> set[str]:
    """Return the environment variable names a module reads: literal keys of environment reads, and the
    literal arguments of its helper functions that read the environment with a parameter as the key
    (``_number("WORK_SCALE", 1.0)`` where ``_number(name, default)`` reads ``os.environ.get(name)``)."""
    helpers: dict[str, tuple[int, str]] = {}
    for function in ast.walk(tree):
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            parameters = [argument.arg for argument in (*function.args.posonlyargs, *function.args.args)]
            for node in ast.walk(function):
                key = _environ_key(node)
                if isinstance(key, ast.Name) and key.id in parameters:
                    helpers[function.name] = (parameters.index(key.id), key.id)
    names: set[str] = set()
    for node in ast.walk(tree):
        if (name := _literal(_environ_key(node))) is not None:
            names.add(name)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in helpers:
            position, parameter = helpers[node.func.id]
            argument = (
                node.args[position]
                if position < len(node.args)
                else next((keyword.value for keyword in node.keywords if keyword.arg == parameter), None)
            )
            if (name := _literal(argument)) is not None:
                names.add(name)
    return names


def python_files() -> Iterator[Path]:
    """Yield the library's and the services' Python files."""
    for directory in CODE_DIRS:
        yield from sorted(path for path in directory.rglob("*.py") if "__pycache__" not in path.parts)


@cache
def names_the_code_reads() -> frozenset[str]:
    """Return every environment variable name that the library or the services read."""
    names: set[str] = set()
    for path in python_files():
        names |= names_read_by(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return frozenset(names)
