"""``roost demo``'s scripted conversation against a real server: every client reads what the
others said, in order, and the remaining members agree on the final epoch."""

from __future__ import annotations

from roost.cli.demo import run_script


async def test_demo_script_every_client_sees_the_conversation(server, tmp_path):
    lines: list[str] = []
    seen = await run_script(server.url, tmp_path, out=lines.append)
    assert set(seen) == {"alice", "bob-laptop", "bob-phone", "carol"}
    assert "bob-phone sees  alice: Hi all, welcome to the roost!" in [
        s.strip() for s in seen["bob-phone"]
    ]
    said = ["Hello from my laptop", "...and from my phone", "Hey everyone"]
    alice_saw = [s.split(": ", 1)[1] for s in seen["alice"] if ": " in s and "[" not in s]
    assert alice_saw[:3] == said
    assert not any("Bye carol" in s for s in seen["carol"])  # she left before it was sent
    assert lines[-1].endswith("agree on the epoch authenticator: True")
