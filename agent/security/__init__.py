"""Secrets at rest (Fernet), access control and rate limits.

Every listening surface goes through access.py and ratelimit.py."""
