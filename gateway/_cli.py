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
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from gateway._auth import issue_token, load_or_create_secret
from gateway._config import Config, ConfigError, load_config
from gateway._journal import JournalError, UnsupportedJournalFormat, recover
from gateway._server import serve


def _config(args: argparse.Namespace) -> Config:
    overrides: dict[str, Any] = {"data_dir": args.data_dir}
    for name in ("host", "rest_port", "ws_port"):
        overrides[name] = getattr(args, name, None)
    return load_config(args.config, overrides=overrides)


async def _serve(config: Config) -> None:
    try:
        await _serve_until_signal(config)
    except BaseExceptionGroup as group:
        # One meaningful error (a corrupt journal, a port in use) reaches the user
        # as itself, not wrapped in the nursery's exception group.
        leaves = list(_leaves(group))
        if len(leaves) == 1 and isinstance(leaves[0], (JournalError, OSError)):
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
    secret = config.auth.jwt_secret or load_or_create_secret(config.data_dir)
    ttl = config.auth.token_ttl if args.ttl is None else args.ttl
    print(issue_token(secret, args.user, ttl=ttl, issuer=config.auth.issuer,
                      audience=config.auth.audience))
    return 0


async def _watch(url: str, requests: list[str], limit: int | None) -> int:
    try:
        async with open_websocket_url(url) as ws:
            for message in requests:
                await ws.send_message(message)
            seen = 0
            while limit is None or seen < limit:
                print(await ws.get_message(), flush=True)
                seen += 1
    except HandshakeError as exc:
        print(f"trade-engine: {url}: {exc}", file=sys.stderr)
        return 1
    except ConnectionClosed as exc:
        print(f"trade-engine: closed: {exc.reason}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"trade-engine: cannot connect to {url}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


def _journal(args: argparse.Namespace) -> int:
    config = _config(args)
    encode = msgspec.json.Encoder().encode
    events_out = args.journal_command == "replay" and args.events

    def show(record: object, events: list[object]) -> None:
        for event in events:
            line = msgspec.to_builtins(event)
            line["event"] = type(event).__name__
            sys.stdout.write(encode(line).decode() + "\n")

    try:
        recovery = recover(
            args.directory, config.markets, order_history=config.engine.order_history,
            trade_history=config.engine.trade_history,
            on_record=show if events_out else None, repair=False,
        )
    except UnsupportedJournalFormat as exc:
        print(f"trade-engine: journal format not supported: {exc}", file=sys.stderr)
        return 1
    except JournalError as exc:
        print(f"trade-engine: journal is corrupt: {exc}", file=sys.stderr)
        return 1
    engine = recovery.engine
    report = sys.stderr if events_out else sys.stdout
    if args.journal_command == "verify":
        print(f"snapshot seq: {recovery.snapshot_seq}", file=report)
        print(f"records: {recovery.records} ({recovery.replayed} after the snapshot)",
              file=report)
        for line in recovery.truncated:
            print(f"torn tail (a restart truncates it): {line}", file=report)
    print(f"last seq: {engine.last_seq}", file=report)
    print(f"state hash: {engine.state_hash()}", file=report)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trade-engine", description="A matching engine with real-time WebSocket streams.")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    commands = parser.add_subparsers(dest="command", required=True)

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--config", type=Path, help="TOML configuration file")
        sub.add_argument("--data-dir", type=Path, help="data directory (secret, journal)")

    run = commands.add_parser("serve", help="run the REST and WebSocket gateway")
    common(run)
    run.add_argument("--host", help="address to bind (default 127.0.0.1)")
    run.add_argument("--rest-port", type=int, help="REST port (default 8080; 0 picks one)")
    run.add_argument("--ws-port", type=int, help="WebSocket port (default 8081; 0 picks one)")

    token = commands.add_parser("token", help="print a JWT for a user")
    common(token)
    token.add_argument("--user", required=True, help="the user id (the token's sub)")
    token.add_argument("--ttl", type=float, help="validity in seconds (default: config)")

    watch = commands.add_parser("watch", help="print the messages of a WebSocket endpoint")
    watch.add_argument("path", help="endpoint path, e.g. /ws/trades or /ws/orders")
    watch.add_argument("--url", default="ws://127.0.0.1:8081", help="WebSocket base URL")
    watch.add_argument("--token", help="JWT for private streams (sent as ?token=)")
    watch.add_argument("--send", action="append", default=[], metavar="JSON",
                       help="a message to send first, e.g. a subscribe request (repeatable)")
    watch.add_argument("--count", type=int, help="exit after this many messages")

    journal = commands.add_parser("journal", help="check or replay a journal directory")
    journal_commands = journal.add_subparsers(dest="journal_command", required=True)
    verify = journal_commands.add_parser(
        "verify", help="check every record and the snapshot; print counts, last seq, hash")
    replay = journal_commands.add_parser(
        "replay", help="rebuild the state; print the state hash (and the events)")
    replay.add_argument("--events", action="store_true",
                        help="print every replayed event as a JSON line")
    for sub in (verify, replay):
        common(sub)
        sub.add_argument("directory", type=Path, help="the journal directory")
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
            url = args.url.rstrip("/") + args.path
            if args.token:
                url += ("&" if "?" in url else "?") + "token=" + args.token
            return trio.run(_watch, url, args.send, args.count)
        trio.run(_serve, _config(args))
    except (ConfigError, JournalError) as exc:
        print(f"trade-engine: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"trade-engine: cannot start: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
