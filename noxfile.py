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


def _bench_python() -> str:
    """``BENCH_PYTHON`` as pyenv's interpreter path when pyenv has it installed.

    nox resolves a bare "3.12" among the interpreters on PATH and the *active*
    pyenv versions; where 3.12 is installed in pyenv but not active (as on our
    dev machines) that finds nothing, while a path always resolves. Without
    pyenv the bare version is used.
    """
    import os  # noqa: PLC0415 - local so that this session is self-contained
    from pathlib import Path  # noqa: PLC0415

    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    found = {
        int(patch): path
        for path in root.glob(f"versions/{BENCH_PYTHON}.*/bin/python{BENCH_PYTHON}")
        if (patch := path.parent.parent.name.removeprefix(f"{BENCH_PYTHON}.")).isdigit()
    }
    return str(found[max(found)]) if found else BENCH_PYTHON


@nox.session(python=_bench_python())
def bench_engine(session: nox.Session) -> None:
    """Our engine against matching-engine and pyorderbook; see bench/README.md, "Engine".

    Writes bench/results/engine.json. Arguments after ``--`` go to the
    benchmark, e.g. ``nox -s bench_engine -- --rounds 3`` or ``-- --profile``.
    """
    session.install(".", "matching-engine==0.1.1", "pyorderbook==0.4.9")
    session.run("python", "-m", "bench.engine", *session.posargs)


@nox.session(python=_bench_python())
def bench_order_entry(session: nox.Session) -> None:
    """Acked orders/s and ack latency: our REST and WebSocket, matching-engine, bare ASGI.

    See bench/README.md, "Order entry". Python 3.12 for matching-engine 0.1.1 (its
    ``gateway`` extra brings uvicorn, httptools and FastAPI). Not part of the default
    sessions; ~10 minutes. Writes bench/results/order_entry.json and order_entry.png.
    Arguments after ``--`` go to the benchmark, e.g. ``nox -s bench_order_entry --
    --connections 64 --rounds 1`` or ``-- --pipeline 8``.
    """
    session.install(".", "matching-engine[gateway]==0.1.1", "matplotlib>=3.11", "hypercorn")
    session.run("python", "-m", "bench.order_entry", *session.posargs)


@nox.session(python=PYTHON)
def bench_journal(session: nox.Session) -> None:
    """Commands/s through engine + journal per fsync policy; see bench/README.md, "Journal".

    Runs on the default Python (3.11): it needs only the project, no PyPI peers.
    Writes bench/results/journal.json. Arguments after ``--`` go to the benchmark,
    e.g. ``nox -s bench_journal -- --rounds 5`` or ``-- --count 100000``.
    """
    session.install(".")
    session.run("python", "-m", "bench.journal", *session.posargs)


@nox.session(python=PYTHON)
def bench_deflate(session: nox.Session) -> None:
    """permessage-deflate: CPU per delivery and bytes saved; see bench/README.md.

    Writes bench/results/deflate.json. Arguments after ``--`` go to the benchmark,
    e.g. ``nox -s bench_deflate -- --subscribers 1000`` or ``-- --rounds 5``.
    """
    session.install(".")
    session.run("python", "-m", "bench.deflate", *session.posargs)


@nox.session(python=PYTHON)
def soak(session: nox.Session) -> None:
    """100,000 connect/subscribe/disconnect cycles with orders flowing; see bench/README.md, "Soak".

    Not part of the default sessions. Writes bench/results/soak.json and exits 1 if tasks or
    file descriptors do not return to their baseline or RSS grows by 5% or more. Arguments
    after ``--`` go to the benchmark, e.g. ``nox -s soak -- --cycles 20000 --clients 4``.
    """
    session.install(".")
    session.run("python", "-m", "bench.soak", *session.posargs)


@nox.session(python=PYTHON)
def load(session: nox.Session) -> None:
    """Fan-out load on our gateway; see bench/README.md, "Fan-out load".

    Not part of the default sessions. Writes bench/results/load.json and load.png.
    Arguments after ``--`` go to ``python -m bench.load``, e.g.
    ``nox -s load -- --clients 1000 --rate 50 --duration 20``, ``-- --hold 10000
    --duration 60`` or ``-- --stall 1 --repeat 3``.
    """
    session.install(".", "matplotlib>=3.11")
    session.run("python", "-m", "bench.load", *session.posargs)


@nox.session(python=PYTHON)
def load_baseline(session: nox.Session) -> None:
    """Ours and the websockets + uvloop baseline side by side, same clients, rate and size.

    Writes bench/results/load_baseline.json and load_baseline.png; e.g.
    ``nox -s load_baseline -- --clients 1000 --rate 50 --duration 20 --repeat 3``.
    """
    session.install(".", "websockets>=17.4", "uvloop>=0.23", "matplotlib>=3.11")
    session.run("python", "-m", "bench.load", "--server", "both", *session.posargs)


@nox.session(python=PYTHON)
def load_sweep(session: nox.Session) -> None:
    """Raise the rate until p99 > 50 ms or a miss, ours and the baseline; the ratio.

    Writes bench/results/sweep.json and sweep.png; e.g. ``nox -s load_sweep --
    --clients 1000 --rate 20 --sweep-max-seconds 600``.
    """
    session.install(".", "websockets>=17.4", "uvloop>=0.23", "matplotlib>=3.11")
    session.run("python", "-m", "bench.load", "--sweep", *session.posargs)


@nox.session(python=PYTHON)
def load_scaleout(session: nox.Session) -> None:
    """Redis + 1 engine + 1, 2 and 3 gateways against all-in-one, and the kill-a-gateway drill.

    See bench/README.md, "Scale-out load". Needs ``redis-server`` (Debian package
    redis-server) on PATH. Writes bench/results/load_scaleout.json; e.g. ``nox -s
    load_scaleout -- --clients 600 --rate 50 --duration 15``.
    """
    session.install(".")
    session.run("python", "-m", "bench.load_scaleout", *session.posargs)
