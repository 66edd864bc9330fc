"""doge-agent: open firmware for Scrypt (Litecoin / Dogecoin) ASIC miners.

One process drives the hash board, mines through Stratum pools and shows its state."""

__version__ = "0.1.0"
