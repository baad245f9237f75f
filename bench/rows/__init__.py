"""The benchmark's rows, one module each (see bench/README.md)."""
