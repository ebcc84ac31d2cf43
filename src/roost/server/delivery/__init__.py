"""Delivery Service: MLS groups followed by a server-side observer, ordered fan-out, roles."""
