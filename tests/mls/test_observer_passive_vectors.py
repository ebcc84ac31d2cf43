"""The server's GroupObserver follows the passive-client chains next to a member.

The vectors carry no GroupInfo, so the observer starts from the member's public state after
the Welcome (GroupContext, tree, interim transcript hash). For every epoch whose proposals and
commit are all PublicMessage, the observer applies them and must reach the member's
GroupContext. Epochs with a PrivateMessage handshake cannot be followed by a server (it has
no keys; Roost requires PublicMessage handshakes): there the observer is re-seeded from the
member's state, and the test reports how many epochs it followed.
"""

from __future__ import annotations

import pytest

from roost.mls.framing import MLSMessage, PublicMessage
from roost.mls.group.observer import GroupObserver

from .test_passive_client import _join
from .vectors import cases, h


def _is_public(hex_msg: str) -> bool:
    return isinstance(MLSMessage.decode(h(hex_msg)).body, PublicMessage)


def _follow_with_observer(case) -> tuple[int, int]:
    member = _join(case)
    observer = GroupObserver.from_public_state(member.public_state)
    followed = skipped = 0
    for n, epoch in enumerate(case["epochs"]):
        msgs = [*epoch["proposals"], epoch["commit"]]
        public = all(_is_public(m) for m in msgs)
        for p in epoch["proposals"]:
            member.process(h(p))
            if public:
                assert observer.apply(h(p)).kind == "proposal"
        member.process(h(epoch["commit"]))
        assert member.epoch_authenticator == h(epoch["epoch_authenticator"])
        if public:
            result = observer.apply(h(epoch["commit"]))
            assert result.kind == "commit" and result.epoch == member.epoch
            assert observer.group_context == member.group_context, f"epoch {n}"
            assert observer.tree.to_bytes() == member.tree.to_bytes()
            assert observer.public_state.interim_transcript_hash == member.interim_transcript_hash
            followed += 1
        else:
            observer = GroupObserver.from_public_state(member.public_state)
            skipped += 1
    return followed, skipped


@pytest.mark.parametrize("case", cases("passive-client-handling-commit"))
def test_observer_handling_commit(case):
    followed, skipped = _follow_with_observer(case)
    print(f"observer followed {followed} epochs, {skipped} PrivateMessage epochs re-seeded")


@pytest.mark.parametrize("case", cases("passive-client-random"))
def test_observer_random(case):
    followed, skipped = _follow_with_observer(case)
    print(f"observer followed {followed} epochs, {skipped} PrivateMessage epochs re-seeded")
    assert followed > 0
