"""assets and push registrations: the uploader and the push target stored only sealed

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-22 09:00:00

``assets.user_uuid`` and ``assets.client_uuid`` give way to ``assets.owner_seal``: the
uploading user sealed under the server's seal key file (``seal.py``), bound to the asset id. The
uploading client was never used and is dropped. ``push_registrations.target``, ``p256dh`` and
``auth`` give way to ``sealed_target``: the same values sealed, bound to the client.

Existing rows are sealed in place, so the upgrade needs the seal key file the server uses,
which ``roost db upgrade`` passes in (``seal_key`` attribute; ``queue_seal_key_file``,
default ``<data_dir>/queue-seal.key``).
The seal formats are written out here, not imported, so this revision keeps producing what
the code of its time reads: ``assets/service.py`` and ``push/target_seal.py`` open them.
"""

import base64
import json

import sqlalchemy as sa
from alembic import context, op

from roost.server.seal import Seal

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

ASSET_OWNER_LABEL = b"roost asset owner seal v1:"
PUSH_TARGET_LABEL = b"roost push target seal v1:"


def _seal(label: bytes) -> Seal:
    seal_key = context.config.attributes.get("seal_key")
    if seal_key is None:
        raise RuntimeError(
            "sealing asset uploaders and push targets needs the server's seal key file: run "
            "`roost db upgrade` with the server's configuration"
        )
    return Seal(seal_key, label)


def _b64u(raw: bytes | None) -> str | None:
    return None if raw is None else base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


def upgrade() -> None:
    conn = op.get_bind()

    op.add_column("assets", sa.Column("owner_seal", sa.LargeBinary(length=64), nullable=True))
    assets = sa.table(
        "assets",
        sa.column("id", sa.String),
        sa.column("user_uuid", sa.String),
        sa.column("owner_seal", sa.LargeBinary),
    )
    rows = conn.execute(sa.select(assets.c.id, assets.c.user_uuid)).all()
    if rows:
        owners = _seal(ASSET_OWNER_LABEL)
        for asset_id, user_uuid in rows:
            conn.execute(
                sa.update(assets)
                .where(assets.c.id == asset_id)
                .values(owner_seal=owners.seal(user_uuid, asset_id.encode()))
            )

    op.add_column("push_registrations", sa.Column("sealed_target", sa.LargeBinary(), nullable=True))
    registrations = sa.table(
        "push_registrations",
        sa.column("client_uuid", sa.String),
        sa.column("target", sa.Text),
        sa.column("p256dh", sa.LargeBinary),
        sa.column("auth", sa.LargeBinary),
        sa.column("sealed_target", sa.LargeBinary),
    )
    regs = conn.execute(
        sa.select(
            registrations.c.client_uuid,
            registrations.c.target,
            registrations.c.p256dh,
            registrations.c.auth,
        )
    ).all()
    if regs:
        targets = _seal(PUSH_TARGET_LABEL)
        for client_uuid, target, p256dh, auth in regs:
            plain = {"target": target, "p256dh": _b64u(p256dh), "auth": _b64u(auth)}
            conn.execute(
                sa.update(registrations)
                .where(registrations.c.client_uuid == client_uuid)
                .values(
                    sealed_target=targets.seal(
                        json.dumps(plain, separators=(",", ":")), client_uuid.encode()
                    )
                )
            )

    # Neither table has a foreign key, nor is referenced by one: rebuilding it (SQLite's batch
    # mode, for NOT NULL) loses nothing. On PostgreSQL these are plain ALTERs.
    with op.batch_alter_table("assets") as batch:
        batch.drop_index("ix_assets_user")
        batch.drop_column("user_uuid")
        batch.drop_column("client_uuid")
        batch.alter_column("owner_seal", existing_type=sa.LargeBinary(length=64), nullable=False)
    with op.batch_alter_table("push_registrations") as batch:
        batch.drop_column("target")
        batch.drop_column("p256dh")
        batch.drop_column("auth")
        batch.alter_column("sealed_target", existing_type=sa.LargeBinary(), nullable=False)


def downgrade() -> None:
    # Forward-only migrations: restore from a backup instead.
    raise NotImplementedError("Roost migrations are forward-only")
