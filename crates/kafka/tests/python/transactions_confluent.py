"""confluent-kafka (librdkafka 2.x) transactions against weir.

Usage: python3 transactions_confluent.py HOST:PORT. Runs each scenario in turn, printing "ok <scenario>" after each,
and exits non-zero on the first wrong observation. Driven by crates/kafka/tests/transactions.rs, which creates the
topics `tx` (2 partitions), `tx-open`, `tx-expire` and `tx-in`/`tx-out` first and checks the broker afterwards.
"""
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

bootstrap = sys.argv[1]


def producer(txn_id, **extra):
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id, **extra})
    p.init_transactions(10)
    return p


def consumer(isolation, group=None, **extra):
    return Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group or f"reader-{uuid.uuid4()}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "isolation.level": isolation,
        "fetch.wait.max.ms": 100,
        **extra,
    })


def read_all(topic, isolation, partitions, settle=2.0, deadline=20.0):
    """Every value a fresh consumer at `isolation` reads from the topic, once nothing more arrives for `settle` s."""
    c = consumer(isolation)
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    values = []
    start = last = time.time()
    while time.time() - last < settle and time.time() - start < deadline:
        m = c.poll(0.2)
        if m is None or (m.error() and m.error().code() == KafkaError._PARTITION_EOF):
            continue
        if m.error():
            raise SystemExit(f"consumer error: {m.error()}")
        values.append(m.value().decode())
        last = time.time()
    c.close()
    return values


def expect(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")


# 1. Commit is visible, abort is not, at read_committed; read_uncommitted sees both.
p = producer("tx-a")
p.begin_transaction()
for i in range(10):
    p.produce("tx", key=f"k{i}", value=f"committed-{i}")
p.commit_transaction(10)
p.begin_transaction()
for i in range(10):
    p.produce("tx", key=f"k{i}", value=f"aborted-{i}")
p.flush()
p.abort_transaction(10)
p.begin_transaction()
for i in range(5):
    p.produce("tx", key=f"k{i}", value=f"again-{i}", headers=[("trace", b"t-1")])
p.commit_transaction(10)
committed = read_all("tx", "read_committed", 2)
expect(sorted(committed) == sorted([f"committed-{i}" for i in range(10)] + [f"again-{i}" for i in range(5)]),
       f"read_committed saw {sorted(committed)}")
uncommitted = read_all("tx", "read_uncommitted", 2)
expect(len(uncommitted) == 25 and sum(v.startswith("aborted-") for v in uncommitted) == 10,
       f"read_uncommitted saw {len(uncommitted)} records")
print("ok commit-and-abort", flush=True)

# 2. A second producer with the same transactional.id fences the first.
p2 = producer("tx-a")
try:
    p.begin_transaction()
    p.produce("tx", value="zombie")
    p.commit_transaction(10)
    raise SystemExit("FAILED: the fenced producer committed")
except KafkaException as e:
    err = e.args[0]
    expect(err.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH),
           f"the fenced producer got {err}")
p2.begin_transaction()
p2.produce("tx", key="k0", value="from-p2")
p2.commit_transaction(10)
expect("from-p2" in read_all("tx", "read_committed", 2) and "zombie" not in read_all("tx", "read_uncommitted", 2),
       "the new producer's record is visible and the zombie's never stored")
print("ok fencing", flush=True)

# 3. An open transaction holds read_committed readers at the last stable offset; committing releases them.
p3 = producer("tx-open")
p3.begin_transaction()
p3.produce("tx-open", value="pending")
p3.flush()
expect(read_all("tx-open", "read_committed", 1, settle=1.0) == [], "read_committed saw an open transaction")
expect(read_all("tx-open", "read_uncommitted", 1, settle=1.0) == ["pending"], "read_uncommitted missed it")
p3.commit_transaction(10)
expect(read_all("tx-open", "read_committed", 1) == ["pending"], "the committed record is not visible")
print("ok last-stable-offset", flush=True)

# 4. The coordinator aborts a transaction open past transaction.timeout.ms, and fences its producer.
p4 = producer("tx-expire", **{"transaction.timeout.ms": 1500})
p4.begin_transaction()
p4.produce("tx-expire", value="expired")
p4.flush()
time.sleep(4)
try:
    p4.commit_transaction(10)
    raise SystemExit("FAILED: a transaction past its timeout committed")
except KafkaException:
    pass
p5 = producer("tx-expire-2")
p5.begin_transaction()
p5.produce("tx-expire", value="after")
p5.commit_transaction(10)
expect(read_all("tx-expire", "read_committed", 1) == ["after"], "the expired transaction was not aborted")
print("ok timeout", flush=True)

# 5. Consume-transform-produce: the consumed offsets are committed with the transaction, only if it commits.
seed = Producer({"bootstrap.servers": bootstrap})
for i in range(20):
    seed.produce("tx-in", value=f"in-{i}")
seed.flush()
c = consumer("read_committed", group="relay", **{"auto.offset.reset": "earliest"})
c.subscribe(["tx-in"])
relay = producer("tx-relay")
got = []
deadline = time.time() + 30
while len(got) < 20 and time.time() < deadline:
    m = c.poll(0.5)
    if m is None or m.error():
        continue
    got.append(m)
expect(len(got) == 20, f"the relay consumed {len(got)} of 20")
# First attempt aborted: nothing out, no offsets.
relay.begin_transaction()
for m in got:
    relay.produce("tx-out", value=m.value().decode().replace("in", "out"))
relay.send_offsets_to_transaction(c.position(c.assignment()), c.consumer_group_metadata(), 10)
relay.abort_transaction(10)
committed = c.committed([TopicPartition("tx-in", 0)], 10)
expect(committed[0].offset < 0, f"an aborted transaction committed offset {committed[0].offset}")
relay.begin_transaction()
for m in got:
    relay.produce("tx-out", value=m.value().decode().replace("in", "out"))
relay.send_offsets_to_transaction(c.position(c.assignment()), c.consumer_group_metadata(), 10)
relay.commit_transaction(10)
committed = c.committed([TopicPartition("tx-in", 0)], 10)
expect(committed[0].offset == 20, f"the committed transaction stored offset {committed[0].offset}")
c.close()
out = read_all("tx-out", "read_committed", 1)
expect(sorted(out) == sorted(f"out-{i}" for i in range(20)), f"tx-out holds {out}")
print("ok consume-transform-produce", flush=True)
print("ok", flush=True)
