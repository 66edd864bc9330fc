"""The mining path: notify -> header template -> work -> nonce -> share.

job.py is pure maths; work.py hands out work ids; shares.py verifies and accounts."""
