"""The README's client program runs as printed, against a live gateway, in a subprocess.

The block under "## The client library" is taken from README.md as is; only
the address changes, to the test gateway's port. The test then rests a bid
and an ask through REST and waits for the program to print their spread.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import trio

from gateway import Gateway

README = Path(__file__).resolve().parents[2] / "README.md"
DEFAULT_URL = "ws://127.0.0.1:8081"


def readme_program() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## The client library", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "no python block under '## The client library' in README.md"
    program = match.group(1)
    assert len(program.strip().splitlines()) <= 10, "the README promises ten lines"
    assert DEFAULT_URL in program
    return program


async def test_the_readme_program_prints_the_spread(gateway: Gateway, token, tmp_path: Path):
    program = readme_program().replace(DEFAULT_URL, gateway.endpoints.ws_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADE_ENGINE_")}
    env["PYTHONUNBUFFERED"] = "1"
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", program], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=env, cwd=tmp_path)
    assert process.stdout is not None
    assert process.stderr is not None
    output = b""
    try:
        with trio.fail_after(30):
            async with httpx.AsyncClient(base_url=gateway.endpoints.rest_url) as http:
                alice = {"Authorization": f"Bearer {token('alice')}"}
                # once the program holds its book, every order below is a change it prints
                while (await http.get("/stats")).json()["subscriptions"].get("depth", 0) < 1:
                    await trio.sleep(0.02)
                for side, price, quantity in (("buy", "50000.00", "0.01"),
                                              ("sell", "50001.00", "0.02")):
                    response = await http.post("/api/v1/orders", headers=alice, json={
                        "symbol": "BTC/USDT", "side": side, "price": price,
                        "quantity": quantity})
                    assert response.status_code == 201
                while b"spread 1.00" not in output:
                    chunk = await process.stdout.receive_some()
                    if not chunk:
                        stderr = await process.stderr.receive_some()
                        raise AssertionError(f"the program exited: {output!r} {stderr!r}")
                    output += chunk
    finally:
        process.kill()
        await process.wait()
        await process.stdout.aclose()
        await process.stderr.aclose()
    assert b"bid 0.01000 @ 50000.00 ask 0.02000 @ 50001.00 spread 1.00" in output
