"""The chaos suite (issue 8): faults against a real group of workers, and a checker of the outputs.

``make chaos`` runs a long seeded run; ``tests/chaos/test_chaos.py`` a short one in ``make test``.
"""
