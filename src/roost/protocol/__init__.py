"""roost.protocol: the client–server wire contract of docs/api.md, written once.

One module per format; the client library and the server both import from here, and this
package imports only ``roost.mls`` (never ``roost.server`` or ``roost.client``).

- ``base64url``: ``b64u``/``unb64u`` for binary values in JSON and paths.
- ``media_types``: the media types of MLS bodies, queue fetches and problems.
- ``opaque``: ``opaque_concat``, the signed contents of the auth proofs.
- ``key_package_batch``: ``MLSMessage key_packages<V>`` (publish and claim).
- ``message_batch``: the queue fetch body (``uint64 seq || opaque payload<V>`` entries).
- ``delivery_frame``: the realtime binary frame (a queue's id, then fetch entries).
- ``group_state``: ``RoostGroupState`` (group creation, group-info answer).
- ``commit_bundle``: ``RoostCommitBundle`` (commit submission).
- ``queue_item``: ``RoostQueueItem`` (every entry the DS writes to a member queue).
- ``signed_notice``: ``SignedNotice`` (homeserver notices, signed and verified).
- ``mls_message_span``: reading one MLSMessage inside those bodies.
"""
