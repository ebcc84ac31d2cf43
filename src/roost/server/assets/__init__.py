"""Encrypted asset distribution: clients upload AES-GCM ciphertext, recipients download it with
an unguessable capability. The server stores opaque blobs and never sees a key or plaintext."""
