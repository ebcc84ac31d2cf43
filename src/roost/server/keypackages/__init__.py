"""The keypackages module."""
