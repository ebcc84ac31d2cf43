"""The shared SQLAlchemy MetaData; each module declares its own tables on it in ``tables.py``."""

import sqlalchemy as sa

metadata = sa.MetaData()
