"""aiokafka and kafka-python (both pure-Python protocol implementations) transactions against weir.

Usage: python3 transactions_pure.py HOST:PORT. Prints "ok <scenario>" after each scenario and exits non-zero on the
first wrong observation. Driven by crates/kafka/tests/transactions.rs, which creates the topics `aio` (2
partitions), `aio-in`, `aio-out` and `kp` first.
"""
import asyncio
import sys
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError as AioKafkaError

bootstrap = sys.argv[1]


def expect(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")


async def aio_read(topic, isolation, settle=2.0):
    c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"r-{uuid.uuid4()}",
                         auto_offset_reset="earliest", isolation_level=isolation, enable_auto_commit=False)
    await c.start()
    values = []
    try:
        while True:
            batch = await c.getmany(timeout_ms=int(settle * 1000))
            records = [r for rs in batch.values() for r in rs]
            if not records:
                break
            values.extend(r.value.decode() for r in records)
    finally:
        await c.stop()
    return values


async def aiokafka_scenarios():
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id="aio-tx")
    await p.start()
    async with p.transaction():
        for i in range(6):
            await p.send("aio", key=f"k{i}".encode(), value=f"c-{i}".encode(), headers=[("h", b"1")])
    await p.begin_transaction()
    for i in range(4):
        await p.send("aio", value=f"a-{i}".encode())
    await p.abort_transaction()
    committed = await aio_read("aio", "read_committed")
    expect(sorted(committed) == [f"c-{i}" for i in range(6)], f"aiokafka read_committed saw {committed}")
    expect(len(await aio_read("aio", "read_uncommitted")) == 10, "aiokafka read_uncommitted missed records")
    print("ok aiokafka-commit-and-abort", flush=True)

    # Fencing: a new producer with the same id; the old one's next transaction fails.
    p2 = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id="aio-tx")
    await p2.start()
    try:
        async with p.transaction():
            await p.send("aio", value=b"zombie")
        raise SystemExit("FAILED: the fenced aiokafka producer committed")
    except AioKafkaError:
        pass
    await p2.stop()
    try:
        await p.stop()
    except AioKafkaError:
        pass
    expect("zombie" not in await aio_read("aio", "read_committed"), "the zombie's record is visible")
    print("ok aiokafka-fencing", flush=True)

    # Offsets sent to the transaction are the group's once it commits.
    seed = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await seed.start()
    for i in range(8):
        await seed.send_and_wait("aio-in", value=f"in-{i}".encode())
    await seed.stop()
    c = AIOKafkaConsumer("aio-in", bootstrap_servers=bootstrap, group_id="aio-relay", auto_offset_reset="earliest",
                         isolation_level="read_committed", enable_auto_commit=False)
    await c.start()
    got = []
    while len(got) < 8:
        batch = await c.getmany(timeout_ms=1000)
        got.extend(r for rs in batch.values() for r in rs)
    relay = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id="aio-relay")
    await relay.start()
    async with relay.transaction():
        for r in got:
            await relay.send("aio-out", value=r.value.replace(b"in", b"out"))
        await relay.send_offsets_to_transaction({TopicPartition("aio-in", 0): got[-1].offset + 1}, "aio-relay")
    committed = await c.committed(TopicPartition("aio-in", 0))
    expect(committed == 8, f"the transaction committed offset {committed}")
    await relay.stop()
    await c.stop()
    expect(sorted(await aio_read("aio-out", "read_committed")) == sorted(f"out-{i}" for i in range(8)),
           "aio-out does not hold each input once")
    print("ok aiokafka-offsets", flush=True)


def kafka_python_scenarios():
    from kafka import KafkaConsumer, KafkaProducer

    p = KafkaProducer(bootstrap_servers=bootstrap, transactional_id="kp-tx")
    p.init_transactions()
    p.begin_transaction()
    for i in range(5):
        p.send("kp", value=f"c-{i}".encode())
    p.commit_transaction()
    p.begin_transaction()
    for i in range(5):
        p.send("kp", value=f"a-{i}".encode())
    p.flush()
    p.abort_transaction()
    p.close()
    seen = {}
    for isolation in ("read_committed", "read_uncommitted"):
        c = KafkaConsumer("kp", bootstrap_servers=bootstrap, group_id=f"kp-{uuid.uuid4()}",
                          auto_offset_reset="earliest", isolation_level=isolation, consumer_timeout_ms=3000)
        seen[isolation] = sorted(m.value.decode() for m in c)
        c.close()
    expect(seen["read_committed"] == [f"c-{i}" for i in range(5)], f"kafka-python read_committed saw {seen}")
    expect(len(seen["read_uncommitted"]) == 10, f"kafka-python read_uncommitted saw {seen}")
    print("ok kafka-python", flush=True)


asyncio.run(aiokafka_scenarios())
kafka_python_scenarios()
print("ok", flush=True)
