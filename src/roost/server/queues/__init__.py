"""The queues module."""
