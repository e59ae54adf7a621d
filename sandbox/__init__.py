"""The local stack: an embedded Kafka broker and mail servers that play the providers."""
