"""kafka-python against weir: one producer (acks=all) and a two-member consumer group.

Usage: python3 group.py HOST:PORT TOPIC. Prints one line per member ("member N: P partitions, R records") and exits
non-zero if anything is lost, duplicated or unbalanced. Driven by crates/kafka/tests/python.rs.
"""
import sys
import threading
import time

from kafka import KafkaConsumer, KafkaProducer

bootstrap, topic = sys.argv[1], sys.argv[2]
COUNT = 400

producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
futures = [producer.send(topic, key=f"k{i % 40}".encode(), value=f"v{i}".encode()) for i in range(COUNT)]
producer.flush()
offsets = [f.get(timeout=10) for f in futures]
assert len({(m.partition, m.offset) for m in offsets}) == COUNT, "duplicate (partition, offset) acknowledgements"
producer.close()

seen = []
lock = threading.Lock()
assigned = {}


def member(n):
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id="py-group",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=10000,
        heartbeat_interval_ms=500,
    )
    deadline = time.time() + 60
    got = 0
    idle_since = time.time()
    while time.time() < deadline:
        batch = consumer.poll(timeout_ms=500)
        records = [r for rs in batch.values() for r in rs]
        if records:
            idle_since = time.time()
            with lock:
                seen.extend((r.partition, r.offset, r.value) for r in records)
            got += len(records)
            consumer.commit()
        with lock:
            done = len(seen) >= COUNT
        # Stay until both members have been in the group a while, so the final assignment is shared.
        if done and time.time() - idle_since > 2.0:
            break
    assigned[n] = sorted(tp.partition for tp in consumer.assignment())
    print(f"member {n}: {len(assigned[n])} partitions, {got} records", flush=True)
    consumer.close()


threads = [threading.Thread(target=member, args=(n,)) for n in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()

values = sorted(v for _, _, v in seen)
assert len(values) == COUNT, f"consumed {len(values)} records, produced {COUNT}"
assert len(set(values)) == COUNT, "a record was consumed twice"
assert all(assigned.get(n) for n in range(2)), f"a member got no partitions: {assigned}"
assert not set(assigned[0]) & set(assigned[1]), f"a partition had two owners: {assigned}"
print("ok", flush=True)
