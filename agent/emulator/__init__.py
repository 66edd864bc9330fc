"""Emulated hardware and pool for the demo and the tests.

hashboard.py (BM1485 chips behind a pty), peripherals.py (PIC, sensors, fans),
pool.py (a Stratum V1 pool)."""
