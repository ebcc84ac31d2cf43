"""Storage: one schema on SQLite and PostgreSQL (SQLAlchemy Core async), Alembic migrations."""

from .engine import Database
from .metadata import metadata

__all__ = ["Database", "metadata"]
