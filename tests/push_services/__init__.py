"""Local stand-ins for the push services (Web Push, APNs, FCM), each a real HTTP process."""
