"""The benchmarks behind `make bench` (bench/run.py): scrypt hash rates, and the mining path."""
