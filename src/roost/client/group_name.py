"""The group-name GroupContext extension: type ``0xF0A1`` (RFC 9420's private-use range), its
data the group's name in UTF-8. The browser messenger names its group conversations with it.

RFC 9420 (sections 7.2, 12.1.7) lets a leaf into a group only if its capabilities list every
non-default GroupContext extension, so Roost clients list this one in every leaf they make
(KeyPackages, a new group's first leaf, external joins): a named group can then add them.
The extension is carried unchanged like any other; ``group_name`` reads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from roost.mls.group import Group
    from roost.mls.leaf_node import Capabilities

GROUP_NAME_EXTENSION = 0xF0A1


def roost_capabilities(cipher_suite: int) -> Capabilities:
    """The capabilities of every leaf this client makes."""
    from roost.mls.key_package_gen import default_capabilities  # heavy: import on use

    return default_capabilities(cipher_suite, (GROUP_NAME_EXTENSION,))


def group_name(group: Group) -> str | None:
    """The group's name, or None (unnamed, e.g. a connection's group of two)."""
    for ext in group.group_context.extensions:
        if ext.extension_type == GROUP_NAME_EXTENSION:
            return ext.extension_data.decode(errors="replace")
    return None
