"""The worker's runtime around faust: consumer, producer, topics, clocks, transactions, recovery."""
