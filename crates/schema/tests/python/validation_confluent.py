"""Schema validation on weir's broker as confluent-kafka's producer meets it, with Confluent's serializers and
weir's registry.

Usage: validation_confluent.py BOOTSTRAP REGISTRY_URL
The topics are made by the Rust test first (see validation.rs): orders (value ids, TopicNameStrategy), events (value
ids, RecordNameStrategy), strict (value ids and payloads), keyed (key ids). Prints one line per check, "offsets
<topic> <end>" for the Rust side to compare, and "all checks passed"; exits non-zero on the first failure.
"""
import sys

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient, record_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

bootstrap, registry_url = sys.argv[1], sys.argv[2]
client = SchemaRegistryClient({"url": registry_url})
watcher = Consumer({"bootstrap.servers": bootstrap, "group.id": "watcher"})


def check(name, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + name + (f": {detail}" if detail and not ok else ""), flush=True)
    if not ok:
        sys.exit(1)


def end(topic):
    return watcher.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]


def send(values, topic, keys=None, **conf):
    """Produces `values` (with `keys`) in one go, lingering so they travel in one batch; each one's error or None."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 200, **conf})
    outcomes = [None] * len(values)
    done = [False] * len(values)

    def report(i):
        def cb(err, _msg):
            outcomes[i] = err
            done[i] = True
        return cb

    for i, value in enumerate(values):
        producer.produce(topic, value=value, key=keys[i] if keys else None, on_delivery=report(i))
    left = producer.flush(30)
    check(f"every delivery to {topic} reported", left == 0 and all(done), (left, done))
    return outcomes


def refused_whole(name, outcomes):
    codes = [e.code() if e else None for e in outcomes]
    check(name, all(c == KafkaError.INVALID_RECORD for c in codes), f"{codes} {outcomes}")


PERSON = """{"type": "record", "name": "Person", "namespace": "shop",
  "fields": [{"name": "name", "type": "string"}, {"name": "age", "type": "int"}]}"""
ORDER = """{"type": "record", "name": "Order", "namespace": "shop",
  "fields": [{"name": "id", "type": "long"}, {"name": "total", "type": "double"}]}"""
REFUND = """{"type": "record", "name": "Refund", "namespace": "shop",
  "fields": [{"name": "order", "type": "long"}, {"name": "reason", "type": "string"}]}"""


def frame(schema_id, payload):
    return b"\x00" + schema_id.to_bytes(4, "big") + payload


# TopicNameStrategy: the serializer registers orders-value; its records are stored.
person = AvroSerializer(client, PERSON)
octx = SerializationContext("orders", MessageField.VALUE)
ada = person({"name": "Ada", "age": 36}, octx)
person_id = int.from_bytes(ada[1:5], "big")
before = end("orders")
check("a registered, framed record is stored", send([ada, person({"name": "Bo", "age": 7}, octx)], "orders") == [None, None])
check("both records are there", end("orders") == before + 2, (before, end("orders")))

# Refused: not framed; framed with an id nobody registered; and a batch with good records around a bad one (lz4, so
# the broker decompresses to check) stores none of them.
before = end("orders")
refused_whole("a plain value is refused with INVALID_RECORD", send([b"just text"], "orders"))
refused_whole("an unregistered id is refused", send([frame(999999, b"\x06Ada\x48")], "orders"))
refused_whole("one bad record refuses its whole batch",
              send([ada, b"\x01not framed", ada], "orders", **{"compression.type": "lz4"}))
check("nothing of the refused batches is stored", end("orders") == before, (before, end("orders")))

# An id registered, but under another subject, and a soft-deleted version: neither counts for orders-value.
other = client.register_schema("elsewhere-value", Schema(ORDER, "AVRO"))
refused_whole("an id under another subject is refused", send([frame(other, b"\x02\x00\x00\x00\x00\x00\x00\x00\x00")], "orders"))
gone = client.register_schema("orders-value", Schema('{"type": "record", "name": "Person", "namespace": "shop", '
                                                     '"fields": [{"name": "name", "type": "string"}]}', "AVRO"))
check("the second version registered", gone != person_id)
client.delete_version("orders-value", 2)
refused_whole("a soft-deleted version's id is refused", send([frame(gone, b"\x06Ada")], "orders"))
check("still nothing stored", end("orders") == before, (before, end("orders")))

# id-only validation does not read payloads: a corrupt payload with a registered id goes in.
corrupt = frame(person_id, b"\x7f\x01")
check("a corrupt payload with a good id is stored when only ids are checked", send([corrupt], "orders") == [None])

# RecordNameStrategy: two record types on one topic, each under its own subject.
rns = {"subject.name.strategy": record_subject_name_strategy}
ectx = SerializationContext("events", MessageField.VALUE)
orders = AvroSerializer(client, ORDER, conf=rns)
refunds = AvroSerializer(client, REFUND, conf=rns)
mixed = [orders({"id": 1, "total": 9.5}, ectx), refunds({"order": 1, "reason": "cold"}, ectx), orders({"id": 2, "total": 1.0}, ectx)]
before = end("events")
check("two record types on one topic are stored", send(mixed, "events") == [None, None, None])
check("all three are there", end("events") == before + 3)
check("each type has its subject", {"shop.Order", "shop.Refund"} <= set(client.get_subjects()), client.get_subjects())
# shop.Person's id is registered under orders-value only, never under shop.Person.
refused_whole("a record type without its own subject is refused", send([ada], "events"))
check("events unchanged", end("events") == before + 3)

# Payload validation: the id must be right and the payload must decode with its schema.
sctx = SerializationContext("strict", MessageField.VALUE)
good = person({"name": "Cy", "age": 50}, sctx)
strict_id = int.from_bytes(good[1:5], "big")
before = end("strict")
check("a valid payload is stored under payload validation", send([good], "strict") == [None])
refused_whole("a framed but corrupt payload is refused", send([frame(strict_id, b"\x7f\x01")], "strict"))
refused_whole("a truncated payload is refused", send([good[:-1]], "strict"))
check("strict holds only the valid record", end("strict") == before + 1)

# Keys: the topic checks keys (subject keyed-key), values are free.
kctx = SerializationContext("keyed", MessageField.KEY)
key_ser = AvroSerializer(client, '"string"')
k = key_ser("customer-1", kctx)
before = end("keyed")
check("a framed key is stored", send([b"any value"], "keyed", keys=[k]) == [None])
refused_whole("a plain key is refused", send([b"any value"], "keyed", keys=[b"customer-1"]))
check("keyed holds one record", end("keyed") == before + 1)

# The admin client: a bad validation value refused with INVALID_CONFIG, a good one accepted and described.
admin = AdminClient({"bootstrap.servers": bootstrap})
bad = admin.create_topics([NewTopic("badly", 1, 1, config={"confluent.value.schema.validation": "maybe"})])
try:
    bad["badly"].result(10)
    check("a bad validation value is refused", False, "created")
except KafkaException as e:
    err = e.args[0]
    check("a bad validation value is refused with INVALID_CONFIG",
          err.code() == KafkaError.INVALID_CONFIG and "confluent.value.schema.validation" in err.str(), err)
check("the refused topic does not exist", "badly" not in admin.list_topics(timeout=10).topics)
made = admin.create_topics([NewTopic("later", 1, 1, config={"redpanda.value.schema.id.validation": "true"})])
made["later"].result(10)
described = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, "later")])
entries = list(described.values())[0].result(10)
check("DescribeConfigs shows the validation", entries["confluent.value.schema.validation"].value == "true",
      {k: v.value for k, v in entries.items()})
refused_whole("the alias turns validation on", send([b"plain"], "later"))

for topic in ("orders", "events", "strict", "keyed"):
    print(f"offsets {topic} {end(topic)}")
watcher.close()
print("all checks passed")
