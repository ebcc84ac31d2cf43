"""The Roost homeserver: ASGI app, configuration, storage and one package per module."""
