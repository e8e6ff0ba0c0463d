"""The Kafka clients alone (agents.dev.bench_client), on the embedded broker: both read
every message, and each figure, the broker's CPU included, is measured."""

from __future__ import annotations

import math

import pytest

from agents.dev import bench_client

pytestmark = pytest.mark.e2e


def test_both_clients_read_every_message_and_the_broker_s_cpu_is_read() -> None:
    messages = [bytes([i]) * 200_000 for i in range(40)]  # 8 MB: CPU ticks of 10 ms add up
    run = bench_client.client_rates(messages, events=40 * 500, broker_address=None)
    assert run.aiokafka_events_per_s > 0 and run.confluent_events_per_s > 0
    assert run.aiokafka_cpu_us_per_event > 0 and run.confluent_cpu_us_per_event > 0
    assert not math.isnan(run.broker_cpu_us_per_event) and run.broker_cpu_us_per_event >= 0
