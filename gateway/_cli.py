"""``trade-engine``: a thin command line over :func:`gateway.serve`.

Commands: ``serve`` runs the gateway until SIGINT or SIGTERM, then shuts it
down gracefully; ``token`` prints a JWT for a user, signed with the same
secret ``serve`` uses (created in the data directory on first use); ``watch``
prints what a WebSocket endpoint sends, one JSON message per line;
``journal verify`` and ``journal replay`` check and rebuild a journal offline.
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import trio

from gateway._auth import issue_token, load_or_create_secret
from gateway._broker._codec import BootstrapMismatch, ReplicaLost
from gateway._config import Config, ConfigError, load_config
from gateway._datadir import DataDirectoryLocked
from gateway._journal import (
    JournalChanged,
    JournalError,
    UnsupportedJournalFormat,
    journal_files,
    read_journal,
)
from gateway._server import serve
from gateway._watch import DEFAULT_URL, EXIT_STATUS, WatchUsageError, run_watch, stream_url


class UsageError(Exception):
    """A command line that cannot work; the message says what to give instead (exit 2)."""


def _config(args: argparse.Namespace) -> Config:
    overrides: dict[str, Any] = {"data_dir": args.data_dir}
    for name in ("host", "rest_port", "ws_port", "role"):
        overrides[name] = getattr(args, name, None)
    overrides["broker.url"] = getattr(args, "broker", None)
    return load_config(args.config, overrides=overrides)


async def _serve(config: Config) -> None:
    try:
        await _serve_until_signal(config)
    except BaseExceptionGroup as group:
        # One meaningful error (a corrupt journal, a port in use, a data directory
        # another server owns) reaches the user
        # as itself, not wrapped in the nursery's exception group.
        leaves = list(_leaves(group))
        if len(leaves) == 1 and isinstance(
                leaves[0], (JournalError, OSError, DataDirectoryLocked, ReplicaLost,
                            BootstrapMismatch)):
            raise leaves[0] from None
        raise


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


async def _serve_until_signal(config: Config) -> None:
    async with trio.open_nursery() as nursery:
        gateway = await nursery.start(serve, config)
        endpoints = gateway.endpoints
        print(f"trade-engine: REST on {endpoints.rest_url}/api/v1, "
              f"WebSocket on {endpoints.ws_url}/ws", flush=True)
        print(f"trade-engine: trading page at {endpoints.rest_url}/", flush=True)
        print(f"trade-engine: data in {config.data_dir}; "
              "get a token with: trade-engine token --user alice", flush=True)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                print(f"trade-engine: {signal.Signals(signum).name}, shutting down", flush=True)
                gateway.shutdown()
                break


def _token(args: argparse.Namespace) -> int:
    config = _config(args)
    if config.auth.jwt_public_key_file is not None:
        print("trade-engine: tokens are verified with an RS256 public key; "
              "sign them with the matching private key", file=sys.stderr)
        return 2
    if args.ttl is not None and not (math.isfinite(args.ttl) and args.ttl >= 1):
        raise UsageError(f"--ttl must be a number of seconds, 1 or more (e.g. --ttl 3600 for "
                         f"an hour), got {args.ttl:g}")
    ttl = config.auth.token_ttl if args.ttl is None else args.ttl
    secret = config.auth.jwt_secret or load_or_create_secret(config.data_dir)
    print(issue_token(secret, args.user, ttl=ttl, issuer=config.auth.issuer,
                      audience=config.auth.audience))
    return 0


def _journal_directory(given: Path | None, config: Config) -> Path:
    """The journal directory to read: ``given``, or the journal inside it, or the config's.

    Raises:
        UsageError: nothing there holds a journal; the message says where to look.
    """
    directory = config.journal_directory if given is None else given
    where = ("the journal directory, by default <data dir>/journal "
             f"(here {config.journal_directory})")
    if not directory.is_dir():
        problem = "does not exist" if not directory.exists() else "is not a directory"
        raise UsageError(f"{directory} {problem}; give {where}")
    if journal_files(directory):
        return directory
    if journal_files(directory / "journal"):
        return directory / "journal"  # the data directory was given
    raise UsageError(f"{directory} holds no journal (no journal-*.log or snapshot-*.bin, "
                      f"nor a journal/ holding them); give {where}")


def _journal(args: argparse.Namespace) -> int:
    config = _config(args)
    directory = _journal_directory(args.directory, config)
    encode = msgspec.json.Encoder().encode
    events_out = args.journal_command == "replay" and args.events

    def show(record: object, events: list[object]) -> None:
        for event in events:
            line = msgspec.to_builtins(event)
            line["event"] = type(event).__name__
            sys.stdout.write(encode(line).decode() + "\n")

    try:
        recovery = read_journal(
            directory, config.markets, order_history=config.engine.order_history,
            trade_history=config.engine.trade_history, on_record=show if events_out else None,
        )
    except UnsupportedJournalFormat as exc:
        print(f"trade-engine: journal format not supported: {exc}", file=sys.stderr)
        return 1
    except JournalChanged as exc:
        print(f"trade-engine: {exc}", file=sys.stderr)
        return 1
    except JournalError as exc:
        print(f"trade-engine: journal is corrupt: {exc}", file=sys.stderr)
        return 1
    engine = recovery.engine
    report = sys.stderr if events_out else sys.stdout
    print(f"journal: {directory}", file=report)
    if args.journal_command == "verify":
        print(f"snapshot seq: {recovery.snapshot_seq}", file=report)
        print(f"records: {recovery.records} ({recovery.replayed} after the snapshot)",
              file=report)
        for line in recovery.truncated:
            print(f"torn tail (a write in progress if a server is running; else a restart "
                  f"truncates it): {line}", file=report)
    print(f"last seq: {engine.last_seq}", file=report)
    print(f"state hash: {engine.state_hash()}", file=report)
    return 0


SERVE_EXIT_STATUS = """\
exit status:
  0  stopped by SIGINT (Ctrl-C) or SIGTERM, after a graceful shutdown
  2  could not start: a configuration error, a corrupt journal, a port in use,
     or a data directory another trade-engine serve owns (its pid is named)
  3  (--role gateway) its replica cannot go on: Redis lost records the engine's
     journal no longer holds, or the engine started a new epoch; start it again"""

JOURNAL_EXIT_STATUS = """\
exit status:
  0  the journal reads to the end (a torn tail is reported, never truncated)
  1  the journal is corrupt or in an unsupported format (file and offset named)
  2  the directory does not exist or holds no journal (nothing is created)"""

WATCH_HELP = f"""\
ENDPOINT is joined to --url: with the default --url, "trades" opens
{DEFAULT_URL}/ws/trades; the banner's "ws://HOST:PORT/ws" as --url is the
same as "ws://HOST:PORT".

{EXIT_STATUS}"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trade-engine", description="A matching engine with real-time WebSocket streams.")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    commands = parser.add_subparsers(dest="command", required=True)

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--config", type=Path, help="TOML configuration file")
        sub.add_argument("--data-dir", type=Path, help="data directory (secret, journal)")

    run = commands.add_parser(
        "serve", help="run the REST and WebSocket gateway",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=SERVE_EXIT_STATUS)
    common(run)
    run.add_argument("--host", help="address to bind (default 127.0.0.1)")
    run.add_argument("--rest-port", type=int, help="REST port (default 8080; 0 picks one)")
    run.add_argument("--ws-port", type=int, help="WebSocket port (default 8081; 0 picks one)")
    run.add_argument("--role", choices=["all", "engine", "gateway"],
                     help="all (default: one process), or the engine or a gateway of a "
                          "scale-out deployment (docs/scaling.md)")
    run.add_argument("--broker", metavar="URL",
                     help="redis://HOST:PORT/DB shared by the engine and its gateways "
                          "(roles engine and gateway)")

    token = commands.add_parser("token", help="print a JWT for a user")
    common(token)
    token.add_argument("--user", required=True, help="the user id (the token's sub)")
    token.add_argument("--ttl", type=float,
                       help="validity in seconds, 1 or more (default: auth.token_ttl, a day)")

    watch = commands.add_parser(
        "watch", help="print the messages of a WebSocket endpoint",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=WATCH_HELP)
    watch.add_argument("path", metavar="ENDPOINT",
                       help="/ws/trades, ws/trades or trades (all the same), /ws/orders, "
                            "/ws/markets/BTC-USDT, /ws; or a whole ws:// URL")
    watch.add_argument("--url", default=DEFAULT_URL,
                       help=f"the server's WebSocket URL (default {DEFAULT_URL}); the banner's "
                            "ws://HOST:PORT/ws works too")
    watch.add_argument("--token", help="JWT for private streams (sent as ?token=, never printed)")
    watch.add_argument("--send", action="append", default=[], metavar="JSON",
                       help="a message to send first, e.g. a subscribe request (repeatable)")
    watch.add_argument("--count", type=int, help="exit after this many messages")

    journal = commands.add_parser("journal", help="check or replay a journal directory")
    journal_commands = journal.add_subparsers(dest="journal_command", required=True)
    verify = journal_commands.add_parser(
        "verify", help="check every record and the snapshot; print counts, last seq, hash",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=JOURNAL_EXIT_STATUS)
    replay = journal_commands.add_parser(
        "replay", help="rebuild the state; print the state hash (and the events)",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=JOURNAL_EXIT_STATUS)
    replay.add_argument("--events", action="store_true",
                        help="print every replayed event as a JSON line")
    for sub in (verify, replay):
        common(sub)
        sub.add_argument(
            "directory", type=Path, nargs="?",
            help="the journal directory, or the data directory holding it (default: the "
                 "configuration's, <data dir>/journal); read only, safe beside a running server")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "token":
            return _token(args)
        if args.command == "journal":
            return _journal(args)
        if args.command == "watch":
            url = stream_url(args.url, args.path, args.token)
            return run_watch(url, args.token, args.send, args.count)
        trio.run(_serve, _config(args))
    except (ConfigError, JournalError, UsageError, WatchUsageError) as exc:
        print(f"trade-engine: {exc}", file=sys.stderr)
        return 2
    except (OSError, DataDirectoryLocked, BootstrapMismatch) as exc:
        print(f"trade-engine: cannot start: {exc}", file=sys.stderr)
        return 2
    except ReplicaLost as exc:
        print(f"trade-engine: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:  # the journal tools; watch and serve handle SIGINT themselves
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
