"""The connections module."""
