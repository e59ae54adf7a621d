"""Partitioned, durable keyed tables: local state per partition, a changelog on Kafka.

Nothing is imported here: `sendrail.topics` names the changelog entry's type, and the
real table imports the Kafka clients, which import `sendrail.topics`.
"""
