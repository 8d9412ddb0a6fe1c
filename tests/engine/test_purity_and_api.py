"""The package's shape: pure (no I/O, no clock, no randomness) and one public surface.

This is the one test module that looks at ``engine/*.py`` source files; it
reads them with ``ast`` and never imports the private modules directly.
"""

from __future__ import annotations

import ast
import enum
import inspect
from pathlib import Path

import msgspec
import pytest

import engine

ENGINE_DIR = Path(engine.__file__).parent
SOURCES = sorted(ENGINE_DIR.glob("*.py"))

FORBIDDEN = {
    "trio", "asyncio", "socket", "time", "random", "os", "threading", "datetime", "select",
    "selectors", "subprocess", "uuid",
}
"""Modules that do I/O, read a clock or draw random numbers."""


def _is_dynamic_import(call: ast.Call) -> bool:
    """``__import__("x")`` or ``importlib.import_module("x")`` with a literal name."""
    func = call.func
    name = func.id if isinstance(func, ast.Name) else (
        func.attr if isinstance(func, ast.Attribute) else None)
    return (name in ("__import__", "import_module") and bool(call.args)
            and isinstance(call.args[0], ast.Constant))


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports, at any depth of the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and _is_dynamic_import(node):
            found.add(str(node.args[0].value).split(".")[0])
    return found


def test_the_engine_package_has_source_files():
    assert {p.name for p in SOURCES} >= {"__init__.py", "_engine.py", "_book.py"}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_engine_module_imports_nothing_that_does_io_or_reads_a_clock(path):
    assert imported_modules(path) & FORBIDDEN == set()


def test_the_import_check_would_catch_a_forbidden_import(tmp_path):
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text(
        "import os.path\nfrom time import monotonic\n"
        "def f():\n    import random\n    return __import__('socket')\n"
    )

    assert imported_modules(sneaky) & FORBIDDEN == {"os", "time", "random", "socket"}


# --- the public surface --------------------------------------------------------------


def reexported_names() -> set[str]:
    """Every public name ``engine/__init__.py`` binds, by reading its source."""
    tree = ast.parse((ENGINE_DIR / "__init__.py").read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom | ast.Import):
            names.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
    return {n for n in names if not n.startswith("_")} - {"annotations"}


def test_all_lists_exactly_the_names_the_package_re_exports():
    assert set(engine.__all__) == reexported_names()


def test_all_has_no_duplicates():
    assert len(engine.__all__) == len(set(engine.__all__))


@pytest.mark.parametrize("name", engine.__all__)
def test_every_public_name_is_importable(name):
    namespace: dict[str, object] = {}
    exec(f"from engine import {name}", namespace)

    assert namespace[name] is getattr(engine, name)


def test_star_import_gives_exactly_all():
    namespace: dict[str, object] = {}
    exec("from engine import *", namespace)

    assert set(namespace) - {"__builtins__"} == set(engine.__all__)


def test_public_re_exports_say_they_come_from_the_engine_package():
    for name in engine.__all__:
        value = getattr(engine, name)
        if inspect.isclass(value):
            assert value.__module__.startswith("engine."), name


def test_module_docstrings_state_their_rules():
    for path in SOURCES:
        docstring = ast.get_docstring(ast.parse(path.read_text()))
        assert docstring, f"{path.name} has no module docstring"


# --- commands and events are immutable values -----------------------------------------

COMMANDS_AND_EVENTS = [
    engine.PlaceOrder, engine.CancelOrder, engine.CancelAllOrders, engine.AmendOrder,
    engine.OrderAccepted, engine.OrderRejected, engine.TradeExecuted, engine.OrderFilled,
    engine.OrderCancelled, engine.OrderAmended, engine.BookLevelChanged, engine.TopOfBookChanged,
]


@pytest.mark.parametrize("cls", COMMANDS_AND_EVENTS, ids=lambda c: c.__name__)
def test_commands_and_events_are_frozen_structs(cls):
    assert issubclass(cls, msgspec.Struct)
    assert cls.__struct_config__.frozen


def test_a_command_cannot_be_changed_after_it_is_made():
    command = engine.CancelOrder(order_id=1, user_id="alice")

    with pytest.raises(AttributeError):
        command.order_id = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    "cls", [engine.PlaceOrder, engine.CancelOrder, engine.CancelAllOrders, engine.AmendOrder],
    ids=lambda c: c.__name__,
)
def test_commands_take_keywords_only(cls):
    with pytest.raises(TypeError):
        cls(1, "alice")


def test_reason_codes_are_stable_lowercase_strings():
    for enum_type in (engine.RejectReason, engine.CancelReason, engine.OrderStatus,
                      engine.Liquidity, engine.Side, engine.OrderType, engine.TimeInForce,
                      engine.SelfTradePrevention):
        assert issubclass(enum_type, enum.StrEnum)
        for member in enum_type:
            assert member.value == member.name.lower()


def test_the_command_union_names_every_command():
    assert set(engine.Command.__args__) == {
        engine.PlaceOrder, engine.CancelOrder, engine.CancelAllOrders, engine.AmendOrder}


def test_the_event_union_names_every_event():
    assert set(engine.Event.__args__) == set(COMMANDS_AND_EVENTS[4:])
