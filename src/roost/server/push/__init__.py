"""push: notify clients that are not connected over realtime (Web Push, APNs, FCM).

Kept import-free: ``store.tables`` imports ``push.tables`` and must not pull the service in.
"""
