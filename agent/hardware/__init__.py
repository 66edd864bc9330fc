"""Board support: BM1485 chains over UART, PIC/sensors/fans/GPIO/LEDs, the CPU board, remote miners.

bm1485.py is pure encoding; every other module is a thin shell over a real interface."""
