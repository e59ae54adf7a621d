"""Batched publishing puts every key on the partition the producer's own partitioner picks."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given, settings
from hypothesis import strategies as st

from sendrail.bus.publisher import murmur2, partition_for


@settings(max_examples=2000, deadline=None)
@given(key=st.binary(max_size=80))
def test_murmur2_is_kafkas(key: bytes) -> None:
    assert murmur2(key) == aiokafka_murmur2(key)


@settings(max_examples=500, deadline=None)
@given(key=st.binary(min_size=1, max_size=60), count=st.integers(1, 64))
def test_the_partition_is_the_default_partitioners(key: bytes, count: int) -> None:
    partitions = list(range(count))
    assert partition_for(key, partitions) == DefaultPartitioner()(key, partitions, partitions)
