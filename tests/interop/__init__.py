"""Interop harness: independent MLS implementations (ts-mls, mls-rs) driven from Python."""
