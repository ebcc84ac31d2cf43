"""Import every module's tables so that ``metadata`` describes the whole schema."""

from ..assets import tables as _assets  # noqa: F401
from ..auth import tables as _auth  # noqa: F401
from ..connections import tables as _connections  # noqa: F401
from ..delivery import tables as _delivery  # noqa: F401
from ..federation import tables as _federation  # noqa: F401
from ..keypackages import tables as _keypackages  # noqa: F401
from ..notify import tables as _notify  # noqa: F401
from ..push import tables as _push  # noqa: F401
from ..queues import tables as _queues  # noqa: F401
from . import settings as _settings  # noqa: F401 - the store's own table
from .metadata import metadata

__all__ = ["metadata"]
