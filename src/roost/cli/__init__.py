"""The ``roost`` command line (entry point ``roost.cli.main:main``)."""
