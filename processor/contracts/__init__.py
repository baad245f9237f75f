"""Wire formats: what comes in, what goes out, and what is stored. Schemas live in ``schemas/``."""
