"""streamapp: real-time detection on Apache Kafka with Faust agents over RocksDB state."""

__all__ = ["__version__"]

__version__ = "0.1.0"
