"""The DS serves GroupInfos to joiners, so it checks their extensions as RFC 9420 defines them
(docs/api.md, "GroupInfo extensions"): ``external_pub``, ``ratchet_tree``, ``external_senders``
and ``required_capabilities``, at group creation and with every commit. A malformed one is a
``422`` with a precise code and leaves the group as it was. Real server processes, both engines;
the hostile client is a real Roost client whose GroupInfo is altered and signed again."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from roost.client import RoostError
from roost.client.groups import group_path, new_group_id
from roost.mls import MLSMessage
from roost.mls.codec import opaque
from roost.mls.constants import ExtensionType
from roost.mls.credential import Credential
from roost.mls.crypto.ciphersuite import get_cipher_suite
from roost.mls.extension_types import ExternalPub, ExternalSender, ExternalSenders
from roost.mls.extensions import Extension, find_extension
from roost.mls.group import Group
from roost.mls.group_info import GroupInfo
from roost.protocol.commit_bundle import encode_commit_bundle
from roost.protocol.group_state import encode_group_state

from .helpers import Member, new_member

Exts = tuple[Extension, ...]
Edit = Callable[[Exts], Exts]


def _with(exts: Exts, ext: Extension) -> Exts:
    return tuple(e for e in exts if e.extension_type != ext.extension_type) + (ext,)


def _resigned(m: Member, gi_message: bytes, *, gi: Edit | None = None, gc: Edit | None = None):  # type: ignore[no-untyped-def]
    """The GroupInfo with its extensions (``gi``) or its GroupContext's (``gc``) edited, signed
    again by the member (a valid signature: only the extension data is wrong)."""
    info = MLSMessage.decode(gi_message).body
    assert isinstance(info, GroupInfo)
    context = info.group_context
    if gc is not None:
        context = replace(context, extensions=gc(context.extensions))
    unsigned = replace(
        info,
        group_context=context,
        extensions=gi(info.extensions) if gi is not None else info.extensions,
        signature=b"",
    )
    cs = get_cipher_suite(context.cipher_suite)
    sig = cs.sign_with_label(m.client.state.signature_private, b"GroupInfoTBS", unsigned.tbs())
    return MLSMessage(replace(unsigned, signature=sig)).encode()


def _bare_external_pub(exts: Exts) -> Exts:
    """ts-mls 1.6.4's form: the key without its length prefix (not RFC 9420 §12.4.3.2)."""
    ext = find_extension(exts, ExtensionType.EXTERNAL_PUB)
    assert ext is not None
    return _with(
        exts,
        Extension(ExtensionType.EXTERNAL_PUB, ExternalPub.decode(ext.extension_data).external_pub),
    )


def _short_external_pub(exts: Exts) -> Exts:
    return _with(exts, ExternalPub(bytes(31)).to_extension())


def _garbage_tree(exts: Exts) -> Exts:
    return _with(exts, Extension(ExtensionType.RATCHET_TREE, b"\x05\x01\x02\x03\x04\x05"))


def _extra_sender(key: bytes) -> Edit:
    """Another external sender next to the homeserver, whose key is ``key``."""

    def edit(exts: Exts) -> Exts:
        ext = find_extension(exts, ExtensionType.EXTERNAL_SENDERS)
        assert ext is not None
        senders = ExternalSenders.from_extension(ext).senders
        extra = ExternalSender(key, Credential.basic(b"intruder"))
        return _with(exts, ExternalSenders((*senders, extra)).to_extension())

    return edit


def _trailing_byte(extension_type: int) -> Edit:
    def edit(exts: Exts) -> Exts:
        ext = find_extension(exts, extension_type)
        data = ext.extension_data if ext is not None else b"\x00\x00\x00"
        return _with(exts, Extension(extension_type, data + b"\x00"))

    return edit


def _odd_capabilities(exts: Exts) -> Exts:
    # extension_types<V> of 3 bytes: not a whole number of uint16.
    return _with(
        exts, Extension(ExtensionType.REQUIRED_CAPABILITIES, opaque(b"\x00\x0a\x00") + b"\x00\x00")
    )


CREATE_CASES = {
    "bare-external-pub": ("invalid_external_pub", _bare_external_pub, None),
    "short-external-pub": ("invalid_external_pub", _short_external_pub, None),
    "garbage-ratchet-tree": ("invalid_ratchet_tree", _garbage_tree, None),
    "short-sender-key": ("invalid_external_senders", None, _extra_sender(bytes(5))),
    "senders-trailing-byte": (
        "invalid_external_senders",
        None,
        _trailing_byte(ExtensionType.EXTERNAL_SENDERS),
    ),
    "capabilities-trailing-byte": (
        "invalid_required_capabilities",
        None,
        _trailing_byte(ExtensionType.REQUIRED_CAPABILITIES),
    ),
    "capabilities-odd-vector": ("invalid_required_capabilities", None, _odd_capabilities),
}


@pytest.mark.parametrize("case", sorted(CREATE_CASES))
async def test_malformed_extension_at_creation_is_refused(users, case):
    code, gi_edit, gc_edit = CREATE_CASES[case]
    alice = await new_member(users, "alice")
    await alice.groups.create()  # registers alice's queue
    server = await alice.groups.server_sender()
    st = alice.client.state
    group = Group.create(
        st.cipher_suite,
        alice.client.credential,
        st.signature_private,
        group_id=new_group_id(st.home_domain),
        extensions=[
            ExternalSenders((ExternalSender.decode(server.external_sender),)).to_extension()
        ],
    )
    body = encode_group_state(
        _resigned(alice, group.group_info(with_tree=True), gi=gi_edit, gc=gc_edit),
        group.tree.to_bytes(),
    )
    queue = await alice.client.new_queue()  # a queue for the membership, as the library makes
    params = {"queue_id": queue.id, "external_join": "true"}
    with pytest.raises(RoostError) as refused:
        await alice.client.request(
            "POST",
            "/v1/groups",
            params=params,
            content=body,
            content_type="message/mls",
            headers=queue.headers,
        )
    assert (refused.value.status, refused.value.code) == (422, code), refused.value.problem
    with pytest.raises(RoostError) as missing:
        await alice.groups.info(group.group_id)
    assert (missing.value.status, missing.value.code) == (404, "group_not_found")
    # The same group, well formed, is accepted.
    good = encode_group_state(group.group_info(with_tree=True))
    await alice.client.request(
        "POST",
        "/v1/groups",
        params=params,
        content=good,
        content_type="message/mls",
        headers=queue.headers,
    )
    assert (await alice.groups.info(group.group_id)).epoch == 0


def _commit_gce(g: Group, edit: Edit):  # type: ignore[no-untyped-def]
    return g.commit(group_context_extensions=edit(g.group_context.extensions), force_path=True)


COMMIT_CASES = {
    "bare-external-pub": ("invalid_external_pub", _bare_external_pub, None),
    "short-external-pub": ("invalid_external_pub", _short_external_pub, None),
    "garbage-ratchet-tree": ("invalid_ratchet_tree", _garbage_tree, None),
    "short-sender-key": ("invalid_external_senders", None, _extra_sender(bytes(5))),
    "capabilities-trailing-byte": (
        "invalid_required_capabilities",
        None,
        _trailing_byte(ExtensionType.REQUIRED_CAPABILITIES),
    ),
}


@pytest.mark.parametrize("case", sorted(COMMIT_CASES))
async def test_malformed_extension_in_a_commit_is_refused(users, case, monkeypatch):
    code, gi_edit, gce_edit = COMMIT_CASES[case]
    alice = await new_member(users, "alice")
    group = await alice.groups.create(external_join=True)
    gid = group.group_id
    before = await alice.groups.group_state(gid)
    if gce_edit is not None:
        # The hostile client skips its own check of the extensions it proposes.
        monkeypatch.setattr("roost.mls.group.validation.required_capabilities", lambda e: None)
        out = _commit_gce(group, gce_edit)
        monkeypatch.undo()
        group_info = out.group_info
    else:
        out = group.commit(force_path=True)
        group_info = _resigned(alice, out.group_info, gi=gi_edit)
    with pytest.raises(RoostError) as refused:
        await alice.client.request(
            "POST",
            f"/v1/groups/{group_path(gid)}/commits",
            content=encode_commit_bundle(out.commit, group_info, None),
            content_type="message/mls",
            headers=alice.groups.key_headers(gid),
        )
    group.clear_pending_commit()
    assert (refused.value.status, refused.value.code) == (422, code), refused.value.problem
    after = await alice.groups.group_state(gid)
    assert (await alice.groups.info(gid)).epoch == 0
    assert (after.group_info, after.ratchet_tree) == (before.group_info, before.ratchet_tree)
    # A well-formed commit still goes through.
    event = await alice.groups.update(gid)
    assert event.epoch == 1 and (await alice.groups.info(gid)).epoch == 1
