"""The MLS group state machine: ``Group`` (member side) and ``GroupObserver`` (server side)."""

from .member import CommitOutput, Group, ReceivedMessage
from .observer import GroupObserver, ObservedMessage

__all__ = ["CommitOutput", "Group", "GroupObserver", "ObservedMessage", "ReceivedMessage"]
