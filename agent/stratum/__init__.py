"""Stratum V1: message encoding and validation, one pool connection, and failover.

protocol.py is pure; client.py and pools.py are the asyncio shells around it."""
