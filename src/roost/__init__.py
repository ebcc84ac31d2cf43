"""Roost: a homeserver for end-to-end encrypted messaging over MLS (RFC 9420)."""

__version__ = "0.1.0"
