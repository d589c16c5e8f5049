"""The archive: Parquet on S3 of every archived topic, replay from it, and the batch check."""
