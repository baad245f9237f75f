"""The benchmark's shared harness: broker side, population, processes, watching, CPU, table."""
