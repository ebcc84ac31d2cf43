"""Alembic environment: runs on the connection handed over by ``roost.server.store.migrate``."""

from alembic import context

from roost.server.store.tables import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    transactional_ddl=True,  # a failed migration rolls back on both engines
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
