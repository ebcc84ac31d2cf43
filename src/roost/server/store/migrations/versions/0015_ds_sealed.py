"""ds: who is in a group is sealed at rest (member rows, roles, MLS state, GroupInfo); group keys;
processed account events are not kept

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 03:00:00

Every member row's client, user, queue reference and policy become one seal; role rows are
found by an HMAC of (group, user) with the user sealed beside it; each group's observer state
and GroupInfo are sealed (``delivery/at_rest.py``). The keys derive from the server's seal key
file, which ``roost db upgrade`` passes in (``seal_key`` attribute); groups, members, roles and
held items keep their place.
"""

import sqlalchemy as sa
from alembic import context, op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    from roost.server.delivery.at_rest import AtRest, MemberIds

    conn = op.get_bind()
    has_groups = conn.execute(sa.text("SELECT count(*) FROM ds_groups")).scalar_one() > 0
    seal_key = context.config.attributes.get("seal_key")
    if has_groups and seal_key is None:
        raise RuntimeError("sealing the groups needs the server's seal key file")
    at_rest = AtRest(seal_key) if seal_key is not None else None

    # Groups made from now on may have a group key (group_key.py); older ones have none.
    op.add_column("ds_groups", sa.Column("key_check", sa.LargeBinary(length=32), nullable=True))

    # Member rows: a new table (nothing references it, so dropping the old one cascades to
    # nothing), filled with the sealed rows.
    members = conn.execute(
        sa.text(
            "SELECT group_id, leaf_index, client_uuid, user_id, queue_id, queue_domain, policy, "
            "gone, joined_seq FROM ds_members"
        )
    ).all()
    op.drop_index("ix_ds_members_client", table_name="ds_members")
    op.drop_index("ix_ds_members_user", table_name="ds_members")
    op.drop_table("ds_members")
    new_members = op.create_table(
        "ds_members",
        sa.Column(
            "group_id",
            sa.LargeBinary(length=255),
            sa.ForeignKey("ds_groups.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("leaf_index", sa.Integer(), primary_key=True),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("gone", sa.Boolean(), nullable=False),
        sa.Column("joined_seq", sa.BigInteger(), nullable=False, server_default="0"),
    )
    assert new_members is not None
    for r in members:
        assert at_rest is not None
        gid = bytes(r.group_id)
        ids = MemberIds(
            r.client_uuid,
            r.user_id,
            None if r.queue_id is None else bytes(r.queue_id),
            r.queue_domain,
            r.policy,
        )
        conn.execute(
            sa.insert(new_members).values(
                group_id=gid,
                leaf_index=r.leaf_index,
                sealed=at_rest.seal_member(gid, r.leaf_index, ids),
                gone=bool(r.gone),
                joined_seq=r.joined_seq,
            )
        )

    # Role rows: a new primary key, so a new table (nothing references it).
    roles = conn.execute(sa.text("SELECT group_id, user_id, role FROM ds_roles")).all()
    op.drop_table("ds_roles")
    new_roles = op.create_table(
        "ds_roles",
        sa.Column(
            "group_id",
            sa.LargeBinary(length=255),
            sa.ForeignKey("ds_groups.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("user_ref", sa.LargeBinary(length=32), primary_key=True),
        sa.Column("sealed_user", sa.LargeBinary(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
    )
    assert new_roles is not None
    for r in roles:
        assert at_rest is not None
        gid = bytes(r.group_id)
        conn.execute(
            sa.insert(new_roles).values(
                group_id=gid,
                user_ref=at_rest.user_ref(gid, r.user_id),
                sealed_user=at_rest.seal_user(gid, r.user_id),
                role=r.role,
            )
        )

    # Processed account events are not kept (they name deleted users, removed clients and old
    # display names): those already handled go, and the outbox deletes each one once handled.
    op.execute("DELETE FROM account_events WHERE processed_at IS NOT NULL")
    op.execute("ALTER TABLE account_events DROP COLUMN processed_at")  # SQLite >= 3.35

    # Each group's observer state and GroupInfo.
    for g in conn.execute(sa.text("SELECT id, state, group_info FROM ds_groups")).all():
        assert at_rest is not None
        gid = bytes(g.id)
        conn.execute(
            sa.text("UPDATE ds_groups SET state = :s, group_info = :i WHERE id = :g"),
            {
                "s": at_rest.seal_state(gid, bytes(g.state)),
                "i": at_rest.seal_group_info(gid, bytes(g.group_info)),
                "g": g.id,
            },
        )


def downgrade() -> None:
    # Forward-only migrations: restore from a backup instead.
    raise NotImplementedError("Roost migrations are forward-only")
