"""Ingest: the MQTT collector, payload decoding, the processing pipeline and the gateway simulator."""
