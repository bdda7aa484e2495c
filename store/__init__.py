"""Store: InfluxDB line protocol and InfluxQL queries, the schema, and the dead-letter store."""
