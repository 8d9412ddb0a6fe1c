"""The permessage-deflate benchmark runs end to end and writes its JSON (no speed asserted)."""

from __future__ import annotations

import json

from bench import deflate


def test_a_small_run_writes_sizes_and_fan_out_figures(tmp_path, capsys):
    output = tmp_path / "deflate.json"
    assert deflate.main(["--count", "300", "--rounds", "1", "--subscribers", "3",
                         "--levels", "6", "--output", str(output)]) == 0
    result = json.loads(output.read_text())
    snapshots = result["depth_snapshots"]["6"]
    assert [row["levels"] for row in snapshots] == [10, 50, 200]
    assert all(row["deflate_bytes"] < row["plain_bytes"] for row in snapshots)
    fan_out = result["fan_out"]
    assert fan_out["compressed_messages"]["plain"] == 0
    # Once per message, however many deflate subscribers: the same count for all and half.
    assert fan_out["compressed_messages"]["deflate"] == fan_out["compressed_messages"]["mixed"]
    assert fan_out["bytes_sent"]["deflate"] < fan_out["bytes_sent"]["plain"]
    assert "messages compressed" in capsys.readouterr().out
