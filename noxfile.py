"""Developer sessions: tests, lint, typecheck and the benchmarks.

``nox -s tests`` runs the same suite as the README's test command. The
benchmarks live in ``bench/`` and write JSON results to ``bench/results/``.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"
BENCH_PYTHON = "3.12"  # the engine peers on PyPI require Python >= 3.12


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The whole test suite."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.17")
    session.run("ruff", "check", "engine", "gateway", "tests", "bench", "noxfile.py")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy, strict on engine/ and gateway/."""
    session.install("-e", ".[test]", "mypy>=2.4")
    session.run("mypy")
