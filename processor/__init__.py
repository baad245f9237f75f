"""journey-processor: a live, per-customer picture of the buying process, from Kafka."""

__version__ = "0.1.0"
