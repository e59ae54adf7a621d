"""Kafka plumbing every service shares: clients, topic creation, encoding, compacted tables."""
