"""librdkafka's next-generation group protocol (KIP-848, `group.protocol=consumer`) against weir, beside a classic
group on the same topic.

Usage: python3 kip848.py HOST:PORT. Prints "ok <scenario>" after each and exits non-zero on the first wrong
observation. Driven by crates/kafka/tests/kip848.rs, which creates topic `kt` (4 partitions, 200 records) first.
"""
import sys
import time

from confluent_kafka import Consumer

bootstrap = sys.argv[1]


def expect(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")


def consumer(group, protocol, **extra):
    config = {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
              "enable.auto.commit": False, **extra}
    if protocol == "consumer":
        config["group.protocol"] = "consumer"
    else:
        config["session.timeout.ms"] = 6000
    c = Consumer(config)
    c.subscribe(["kt"])
    return c


def drain(members, want, seconds=40):
    seen = []
    deadline = time.time() + seconds
    while len(seen) < want and time.time() < deadline:
        for c in members:
            m = c.poll(0.05)
            if m is None:
                continue
            if m.error():
                raise SystemExit(f"FAILED: consumer error {m.error()}")
            seen.append(m.value().decode())
            c.commit(m, asynchronous=False)
    return seen


# Two KIP-848 members and two classic members, each pair its own group, on the same topic.
new = [consumer("kip848", "consumer") for _ in range(2)]
old = [consumer("classic", "classic") for _ in range(2)]
seen_new = drain(new, 200)
seen_old = drain(old, 200)
expect(len(seen_new) == 200 and len(set(seen_new)) == 200, f"the KIP-848 group read {len(seen_new)} ({len(set(seen_new))} distinct)")
expect(len(seen_old) == 200 and len(set(seen_old)) == 200, f"the classic group read {len(seen_old)}")
print("ok side-by-side", flush=True)

# Both KIP-848 members end up with partitions: the server split the four between them.
deadline = time.time() + 30
while time.time() < deadline:
    for c in new:
        c.poll(0.1)
    sizes = sorted(len(c.assignment()) for c in new)
    if sizes == [2, 2]:
        break
expect(sizes == [2, 2], f"the KIP-848 members hold {sizes} partitions")
print("ok server-side-assignment", flush=True)

# A third member joins without stopping the others: it gets a share, and the group keeps every partition owned once.
third = consumer("kip848", "consumer")
members = new + [third]
deadline = time.time() + 30
while time.time() < deadline:
    for c in members:
        c.poll(0.1)
    sizes = sorted(len(c.assignment()) for c in members)
    if sum(sizes) == 4 and min(sizes) >= 1:
        break
expect(sum(sizes) == 4 and min(sizes) >= 1, f"after a third joined: {sizes}")
print("ok incremental-rebalance", flush=True)

# A subscription by regular expression, which KIP-848 clients hand to the coordinator to match.
regex = Consumer({"bootstrap.servers": bootstrap, "group.id": "kip848-regex", "group.protocol": "consumer",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
regex.subscribe(["^k[t]$"])
seen_regex = drain([regex], 200)
expect(len(set(seen_regex)) == 200, f"the regex subscription read {len(set(seen_regex))}")
print("ok regex-subscription", flush=True)
for c in members + old + [regex]:
    c.close()
print("ok", flush=True)
