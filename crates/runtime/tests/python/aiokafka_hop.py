"""The relay ring's Python hop, as primait/kafka-playground's python_aiokafka service runs it: consume SOURCE, forward
each message unchanged (key, value, headers) to DESTINATION with a transactional aiokafka producer, sending the
consumed offsets to the same transaction (consume-transform-produce).

Usage: python3 aiokafka_hop.py HOST:PORT SOURCE DESTINATION STOP_FILE. Runs until STOP_FILE exists, then finishes the
transaction in hand and exits. Driven by crates/runtime/tests/transactions.rs (the ring test).
"""
import asyncio
import os
import sys
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

bootstrap, source, destination, stop_file = sys.argv[1:5]
group = f"python-aiokafka-consumer-{source}"


async def main():
    consumer = AIOKafkaConsumer(source, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
                                enable_auto_commit=False, isolation_level="read_committed")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"python-{uuid.uuid4()}")
    await consumer.start()
    await producer.start()
    forwarded = 0
    try:
        while not os.path.exists(stop_file):
            batch = await consumer.getmany(timeout_ms=200)
            for tp, records in batch.items():
                async with producer.transaction():
                    for r in records:
                        await producer.send(destination, key=r.key, value=r.value, headers=list(r.headers))
                    await producer.send_offsets_to_transaction({tp: records[-1].offset + 1}, group)
                forwarded += len(records)
    finally:
        await producer.stop()
        await consumer.stop()
    print(f"forwarded {forwarded}", flush=True)


asyncio.run(main())
