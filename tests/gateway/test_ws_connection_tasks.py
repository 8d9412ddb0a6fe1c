"""The design card's shape of a connection: reader, writer and heartbeat, and nothing else.

A token's expiry is a deadline of the heartbeat (``gateway/_heartbeat.py``),
not a task of its own. Read through trio's public task tree.
"""

from __future__ import annotations

import trio


def connection_tasks() -> list[str]:
    """The names of every running connection task (named ``ws-*``), sorted."""
    names: list[str] = []
    todo = [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        if task.name.startswith("ws-"):
            names.append(task.name)
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return sorted(names)


async def test_a_connection_with_a_token_runs_reader_writer_and_heartbeat_only(
    gateway, token, ws_connect
):
    url = f"{gateway.endpoints.ws_url}/ws/orders?token={token('alice')}"
    async with ws_connect(url) as client:
        with trio.fail_after(5):
            assert '"subscribed"' in await client.get_message()  # run() has started its tasks
        assert connection_tasks() == ["ws-heartbeat", "ws-reader", "ws-writer"]


async def test_each_connection_runs_its_own_three(gateway, token, ws_connect):
    async with ws_connect(f"{gateway.endpoints.ws_url}/ws/trades") as anonymous, \
            ws_connect(f"{gateway.endpoints.ws_url}/ws/orders?token={token('bob')}") as bob:
        with trio.fail_after(5):
            for client in (anonymous, bob):
                assert '"subscribed"' in await client.get_message()
        assert connection_tasks() == ["ws-heartbeat"] * 2 + ["ws-reader"] * 2 + ["ws-writer"] * 2
