"""Avro in the Confluent wire format, the schema registry client and its worker service."""
