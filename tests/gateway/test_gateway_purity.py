"""The gateway's pure cores stay pure: no trio, no clock, no sockets, not even indirectly.

The cores decide (heartbeat, close state, admission, routing, limits); the
trio shells around them wait, read and write. A core may import other gateway
modules only if none of those reaches trio or the network, at any depth. The
modules are read with ``ast``, never imported for the check.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import gateway

GATEWAY_DIR = Path(gateway.__file__).parent

CORES = ["_admission", "_closing", "_frames", "_heartbeat", "_history", "_limits", "_routing",
         "_streams", "_broker/_codec", "_broker/_settings"]
"""Add a module here when it becomes a pure core."""

NOT_IN_A_CORE = {
    "trio", "trio_websocket", "asyncio", "socket", "select", "selectors", "threading",
    "time", "os", "random", "datetime",
}
"""What a core module may not import itself: waiting, I/O, the clock, randomness."""

NOT_BEHIND_A_CORE = {"trio", "trio_websocket", "asyncio", "socket", "select", "selectors",
                     "threading", "quart", "quart_trio", "hypercorn"}
"""What no gateway module a core imports may reach, at any depth: the event loop and the network."""


def imports(source: str) -> tuple[set[str], set[str]]:
    """(top-level modules, ``gateway`` submodules) a module's source imports, at any depth."""
    outside: set[str] = set()
    inside: set[str] = set()

    def name(module: str) -> None:
        parts = module.split(".")
        if parts[0] == "gateway" and len(parts) > 1:
            inside.add("/".join(parts[1:]))  # a subpackage's module: "_broker/_codec"
        else:
            outside.add(parts[0])

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                name(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "gateway":  # from gateway import _messages
                inside.update(alias.name for alias in node.names)
            else:
                name(node.module)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name | ast.Attribute):
            func = node.func.id if isinstance(node.func, ast.Name) else node.func.attr
            if (func in ("__import__", "import_module") and node.args
                    and isinstance(node.args[0], ast.Constant)):
                name(str(node.args[0].value))
    return outside, inside


def gateway_imports(module: str) -> tuple[set[str], set[str]]:
    path = GATEWAY_DIR / module
    path = path / "__init__.py" if path.is_dir() else path.with_name(f"{path.name}.py")
    return imports(path.read_text(encoding="utf-8"))


def reachable(module: str) -> dict[str, set[str]]:
    """Every gateway module ``module`` reaches, with what each imports from outside."""
    seen: dict[str, set[str]] = {}
    todo = [module]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        outside, inside = gateway_imports(current)
        seen[current] = outside
        todo.extend(inside)
    return seen


def test_every_core_exists_and_states_its_rules():
    for core in CORES:
        docstring = ast.get_docstring(ast.parse((GATEWAY_DIR / f"{core}.py").read_text()))
        assert docstring, core
        assert "Rules of this module" in docstring, core


@pytest.mark.parametrize("core", CORES)
def test_a_core_imports_nothing_that_waits_does_io_or_reads_a_clock(core):
    outside, _ = gateway_imports(core)
    assert outside & NOT_IN_A_CORE == set()


@pytest.mark.parametrize("core", CORES)
def test_no_gateway_module_behind_a_core_reaches_trio_or_the_network(core):
    reached = {module: outside & NOT_BEHIND_A_CORE for module, outside in reachable(core).items()}
    assert {module: found for module, found in reached.items() if found} == {}


def test_the_checks_would_catch_a_direct_and_an_indirect_import():
    outside, inside = imports(
        "import time\nfrom gateway._hub import Hub\nfrom gateway import _ws\n"
        "def f():\n    return __import__('socket')\n")
    assert outside & NOT_IN_A_CORE == {"time", "socket"}
    assert inside == {"_hub", "_ws"}
    assert "trio" in reachable("_hub")["_hub"]  # a shell, as found by the walk
