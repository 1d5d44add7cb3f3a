"""Ingest by customer partition: pure rules, no broker. Which partition a customer's events go to, and how many
partitions a worker takes.

With ``ingest_partitions`` = N > 1, relance spreads the work over N partition queues and each is consumed by one
worker at a time, so a customer's events are applied in the order the ERP published them and two workers never
lock the same customer (see :mod:`services.ingest.router` and :mod:`services.ingest.worker`):

- :func:`partition_of` is a stable hash of (tenant, customer_id): CRC-32 of ``tenant`` NUL ``customer_id``, modulo
  N. Every process computes the same partition, whatever its Python hash seed.
- :func:`fair_share` is how many partitions a worker holds when ``workers`` share them: the ceiling of N / workers,
  so that together they always hold them all.
"""

from __future__ import annotations

import zlib


def partition_of(tenant: str | None, customer_id: str | None, partitions: int) -> int:
    """The partition of a customer's stream; a message naming no customer goes to partition 0."""
    if partitions <= 1 or tenant is None or customer_id is None:
        return 0
    return zlib.crc32(f"{tenant}\x00{customer_id}".encode()) % partitions


def fair_share(partitions: int, workers: int) -> int:
    """How many partitions one of ``workers`` live workers holds (at least 1: a worker alone holds them all)."""
    return -(-partitions // max(1, workers))
