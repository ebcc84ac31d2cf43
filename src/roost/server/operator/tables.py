"""Tables owned by the operator module: the federation policy a running server reads.

Federation (issue 5) only reads them through ``FederationPolicyStore.load()``.
"""

import sqlalchemy as sa

from ..store.metadata import metadata

# One row (id = 1) once an operator has set a mode; no row means the default mode.
federation_settings = sa.Table(
    "federation_settings",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("mode", sa.String(16), nullable=False),  # "allowlist" | "open"
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

federation_domains = sa.Table(
    "federation_domains",
    metadata,
    sa.Column("domain", sa.String(253), primary_key=True),
    sa.Column("list_kind", sa.String(8), primary_key=True),  # "allow" | "block"
    sa.Column("added_at", sa.BigInteger, nullable=False),
)
