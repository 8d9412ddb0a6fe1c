"""Counters for ``/stats`` and ``/metrics``.

Rules of this module: every counter is a plain integer bumped synchronously by
the task that owns the event it counts (no locks: one trio thread). The
Prometheus view is built from the same numbers at scrape time, on a registry
of its own, so two gateways in one process never share metrics.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import attrs
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


@attrs.define
class Stats:
    connections: int = 0
    connections_total: int = 0
    messages_sent: Counter[str] = attrs.field(factory=Counter)  # by stream
    messages_dropped: int = 0
    messages_compressed: int = 0  # permessage-deflate: once per message and window size
    slow_consumer_disconnects: int = 0
    heartbeat_timeouts: int = 0
    protocol_errors: int = 0
    handshakes_rejected: int = 0
    commands: int = 0
    commands_rejected: int = 0
    busy_rejections: int = 0
    connections_refused: Counter[str] = attrs.field(factory=Counter)  # by reason
    messages_rate_limited: int = 0
    rate_limit_disconnects: int = 0
    token_expirations: int = 0
    rest_rate_limited: int = 0
    orders_rate_limited: int = 0
    ws_order_requests: int = 0
    broker: dict[str, Any] = attrs.field(factory=dict)
    """Scale-out figures a role reports (``gateway/_broker``); shown when not empty."""

    def as_json(self, subscriptions: dict[str, int]) -> dict[str, Any]:
        report = {
            "connections": self.connections,
            "connections_total": self.connections_total,
            "subscriptions": subscriptions,
            "messages_sent": dict(self.messages_sent),
            "messages_sent_total": sum(self.messages_sent.values()),
            "messages_dropped": self.messages_dropped,
            "messages_compressed": self.messages_compressed,
            "slow_consumer_disconnects": self.slow_consumer_disconnects,
            "heartbeat_timeouts": self.heartbeat_timeouts,
            "protocol_errors": self.protocol_errors,
            "handshakes_rejected": self.handshakes_rejected,
            "commands": self.commands,
            "commands_rejected": self.commands_rejected,
            "busy_rejections": self.busy_rejections,
            "connections_refused": dict(self.connections_refused),
            "messages_rate_limited": self.messages_rate_limited,
            "rate_limit_disconnects": self.rate_limit_disconnects,
            "token_expirations": self.token_expirations,
            "rest_rate_limited": self.rest_rate_limited,
            "orders_rate_limited": self.orders_rate_limited,
            "ws_order_requests": self.ws_order_requests,
        }
        if self.broker:
            report["broker"] = dict(self.broker)
        return report


class _StatsCollector(Collector):
    def __init__(self, stats: Stats, subscriptions: Callable[[], dict[str, int]]) -> None:
        self._stats = stats
        self._subscriptions = subscriptions

    def collect(self) -> Iterator[Metric]:
        s = self._stats
        yield GaugeMetricFamily(
            "trade_engine_ws_connections", "Open WebSocket connections.", value=s.connections)
        subs = GaugeMetricFamily(
            "trade_engine_ws_subscriptions", "Subscriptions by stream.", labels=["stream"])
        for stream, count in sorted(self._subscriptions().items()):
            subs.add_metric([stream], count)
        yield subs
        sent = CounterMetricFamily(
            "trade_engine_ws_messages_sent", "Messages queued to clients by stream.",
            labels=["stream"])
        for stream, count in sorted(s.messages_sent.items()):
            sent.add_metric([stream], count)
        yield sent
        refused = CounterMetricFamily(
            "trade_engine_ws_connections_refused", "Upgrade requests refused by limit.",
            labels=["reason"])
        for reason, count in sorted(s.connections_refused.items()):
            refused.add_metric([reason], count)
        yield refused
        for name, doc, value in (
            ("ws_connections_opened", "WebSocket connections accepted.", s.connections_total),
            ("ws_messages_dropped", "Messages not delivered to a closing client.",
             s.messages_dropped),
            ("ws_messages_compressed", "Messages compressed once for all their "
             "permessage-deflate subscribers.", s.messages_compressed),
            ("ws_slow_consumer_disconnects", "Clients closed with 4008.",
             s.slow_consumer_disconnects),
            ("ws_heartbeat_timeouts", "Clients closed with 4009.", s.heartbeat_timeouts),
            ("ws_protocol_errors", "Client messages answered with an error.", s.protocol_errors),
            ("ws_handshakes_rejected", "Upgrade requests refused.", s.handshakes_rejected),
            ("commands", "Commands applied by the engine.", s.commands),
            ("commands_rejected", "Commands the engine rejected.", s.commands_rejected),
            ("busy_rejections", "Commands refused because the queue was full.",
             s.busy_rejections),
            ("ws_messages_rate_limited", "Client messages refused by the rate limit.",
             s.messages_rate_limited),
            ("ws_rate_limit_disconnects", "Clients closed with 4029.", s.rate_limit_disconnects),
            ("ws_token_expirations", "Clients closed with 4003.", s.token_expirations),
            ("rest_rate_limited", "REST requests answered 429.", s.rest_rate_limited),
            ("orders_rate_limited", "Order-entry commands refused by the per-user order rate "
             "(REST and WebSocket).", s.orders_rate_limited),
            ("ws_order_requests", "Order-entry requests received over WebSockets.",
             s.ws_order_requests),
        ):
            yield CounterMetricFamily(f"trade_engine_{name}", doc, value=value)


def prometheus_text(stats: Stats, subscriptions: Callable[[], dict[str, int]]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StatsCollector(stats, subscriptions))
    return generate_latest(registry)
