"""The API reference under docs/reference documents every public name, and every public name has a docstring.

`python3 tasks.py docs` builds the pages with `mkdocs build --strict`, which fails on a docstring griffe
cannot parse; these tests fail on what the build cannot see: a public name left out of the reference.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import griffe

import arq_mediator
import arq_mediator.dashboard
import arq_mediator.litestar
import arq_mediator.outbox

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "reference"
# The public names outside arq_mediator.__all__: the framework integrations, each in a module of its own
# with an `__all__` of its own, so a name exported there later cannot slip past these checks.
INTEGRATIONS = [
    f"{module.__name__}.{name}"
    for module in (arq_mediator.litestar, arq_mediator.outbox, arq_mediator.dashboard)
    for name in module.__all__
]
PUBLIC = [f"arq_mediator.{name}" for name in arq_mediator.__all__] + INTEGRATIONS
# A mkdocstrings directive: `::: dotted.path` at the start of a line, options indented below it.
DIRECTIVE = re.compile(r"^:::\s+(\S+)\s*$", re.MULTILINE)


def documented_paths() -> list[str]:
    """Return the object paths of every `:::` directive in the reference pages, in page order."""
    return [
        match.group(1)
        for page in sorted(REFERENCE.glob("*.md"))
        for match in DIRECTIVE.finditer(page.read_text(encoding="utf-8"))
    ]


def test_reference_pages_exist() -> None:
    """The reference has pages with directives, so the checks below do not pass on nothing."""
    assert len(documented_paths()) >= len(PUBLIC) > len(INTEGRATIONS)


def test_every_public_name_is_in_the_reference() -> None:
    """Each name in `arq_mediator.__all__` and each integration has a `:::` directive on a reference page."""
    missing = sorted(set(PUBLIC) - set(documented_paths()))
    assert not missing, f"add a `::: <name>` directive to a page under docs/reference for: {missing}"


def test_the_reference_documents_public_paths_once() -> None:
    """No directive names a private module or object, and none documents the same object twice."""
    paths = documented_paths()
    private = [path for path in paths if any(part.startswith("_") for part in path.split("."))]
    assert not private, f"document these by their public names (see arq_mediator.__all__): {private}"
    repeated = sorted(path for path, count in Counter(paths).items() if count > 1)
    assert not repeated, f"documented more than once: {repeated}"


def test_every_public_name_has_a_docstring() -> None:
    """Griffe, which the reference is built with, finds a docstring on every public name."""
    package = griffe.load("arq_mediator", search_paths=[ROOT / "src"], resolve_aliases=True)
    missing = [path for path in PUBLIC if not package[path.removeprefix("arq_mediator.")].docstring]
    assert not missing, f"give these a docstring: {missing}"
