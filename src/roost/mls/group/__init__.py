"""The MLS group state machine: ``Group`` (member side) and ``GroupObserver`` (server side),
with the ``StagedCommit`` an observer returns between verifying a commit and merging it."""

from .member import CommitOutput, Group, ReceivedMessage, WelcomeToJoin
from .observer import GroupObserver, ObservedMessage
from .proposal_rules import QueuedProposal
from .staged import LeafChange, RosterChange, StagedCommit

__all__ = [
    "CommitOutput",
    "Group",
    "GroupObserver",
    "LeafChange",
    "ObservedMessage",
    "QueuedProposal",
    "ReceivedMessage",
    "RosterChange",
    "StagedCommit",
    "WelcomeToJoin",
]
