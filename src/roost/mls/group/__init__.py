"""The MLS group state machine: ``Group`` (member side) and ``GroupObserver`` (server side)."""

from .member import CommitOutput, Group, ReceivedMessage

__all__ = ["CommitOutput", "Group", "ReceivedMessage"]
