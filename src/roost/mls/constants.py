"""RFC 9420 code points (section 17 IANA registries)."""

from enum import IntEnum


class ProtocolVersion(IntEnum):
    MLS10 = 1


class WireFormat(IntEnum):
    PUBLIC_MESSAGE = 1
    PRIVATE_MESSAGE = 2
    WELCOME = 3
    GROUP_INFO = 4
    KEY_PACKAGE = 5


class ContentType(IntEnum):
    APPLICATION = 1
    PROPOSAL = 2
    COMMIT = 3


class SenderType(IntEnum):
    MEMBER = 1
    EXTERNAL = 2
    NEW_MEMBER_PROPOSAL = 3
    NEW_MEMBER_COMMIT = 4


class CredentialType(IntEnum):
    BASIC = 1
    X509 = 2


class LeafNodeSource(IntEnum):
    KEY_PACKAGE = 1
    UPDATE = 2
    COMMIT = 3


class ProposalType(IntEnum):
    ADD = 1
    UPDATE = 2
    REMOVE = 3
    PSK = 4
    REINIT = 5
    EXTERNAL_INIT = 6
    GROUP_CONTEXT_EXTENSIONS = 7


class ProposalOrRefType(IntEnum):
    PROPOSAL = 1
    REFERENCE = 2


class PSKType(IntEnum):
    EXTERNAL = 1
    RESUMPTION = 2


class ResumptionPSKUsage(IntEnum):
    APPLICATION = 1
    REINIT = 2
    BRANCH = 3


class NodeType(IntEnum):
    LEAF = 1
    PARENT = 2


class ExtensionType:
    """Extension types form an open set (GREASE and private values), so plain ints."""

    APPLICATION_ID = 1
    RATCHET_TREE = 2
    REQUIRED_CAPABILITIES = 3
    EXTERNAL_PUB = 4
    EXTERNAL_SENDERS = 5
    LAST_RESORT = 0x000A  # draft-ietf-mls-extensions, used by OpenMLS/mls-rs/ts-mls


# Extension and proposal types every implementation supports without listing them in
# Capabilities (RFC 9420 section 7.2).
DEFAULT_EXTENSION_TYPES = frozenset(
    {
        ExtensionType.APPLICATION_ID,
        ExtensionType.RATCHET_TREE,
        ExtensionType.REQUIRED_CAPABILITIES,
        ExtensionType.EXTERNAL_PUB,
        ExtensionType.EXTERNAL_SENDERS,
    }
)
DEFAULT_PROPOSAL_TYPES = frozenset(int(p) for p in ProposalType)
DEFAULT_CREDENTIAL_TYPES = frozenset({CredentialType.BASIC, CredentialType.X509})
