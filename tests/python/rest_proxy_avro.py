"""The REST Proxy's avro format against Confluent's own serializers (run by tests/schema_registry.rs).

Usage: rest_proxy_avro.py KAFKA_ADDR REGISTRY_ADDR HTTP_ADDR

1. Two records produced over HTTP (application/vnd.kafka.avro.v2+json, the schema given as text) are read over the
   Kafka protocol by confluent-kafka's AvroDeserializer, which fetches the schema by id from weir's registry.
2. A record written by confluent-kafka's AvroSerializer (auto-registering under TopicNameStrategy) is read back over
   HTTP by a consumer instance in the avro format, decoded to Avro's JSON encoding.
"""

import json
import sys
import urllib.request

from confluent_kafka import Consumer, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

kafka, registry, http = sys.argv[1:4]
SCHEMA = json.dumps({
    "type": "record", "name": "Order", "namespace": "shop",
    "fields": [{"name": "id", "type": "long"}, {"name": "note", "type": ["null", "string"], "default": None}],
})


def call(method, path, body=None, content_type="application/vnd.kafka.v2+json", accept=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://{http}{path}", data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", content_type)
    if accept:
        request.add_header("Accept", accept)
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read()
        return json.loads(text) if text else None


# 1. HTTP avro in, Confluent's deserializer out.
AVRO = "application/vnd.kafka.avro.v2+json"
answer = call("POST", "/topics/orders", {
    "value_schema": SCHEMA,
    "records": [{"value": {"id": 1, "note": {"string": "first"}}}, {"value": {"id": 2, "note": None}}],
}, content_type=AVRO)
assert answer["value_schema_id"] is not None and len(answer["offsets"]) == 2, answer
assert all(o.get("error_code") is None for o in answer["offsets"]), answer

client = SchemaRegistryClient({"url": f"http://{registry}"})
assert client.get_latest_version("orders-value").schema_id == answer["value_schema_id"], "registered under orders-value"
deserializer = AvroDeserializer(client)
consumer = Consumer({"bootstrap.servers": kafka, "group.id": "py-readers", "auto.offset.reset": "earliest"})
consumer.subscribe(["orders"])
got = []
for _ in range(60):
    message = consumer.poll(1.0)
    if message is None or message.error():
        continue
    got.append(deserializer(message.value(), SerializationContext("orders", MessageField.VALUE)))
    if len(got) == 2:
        break
consumer.close()
assert got == [{"id": 1, "note": "first"}, {"id": 2, "note": None}], got
print("HTTP avro records read by AvroDeserializer:", got)

# 2. Confluent's serializer in, HTTP avro out.
serializer = AvroSerializer(client, SCHEMA)
producer = Producer({"bootstrap.servers": kafka})
value = serializer({"id": 3, "note": "from python"}, SerializationContext("payments", MessageField.VALUE))
producer.produce("payments", value=value)
assert producer.flush(10) == 0

call("POST", "/consumers/http-readers", {"name": "one", "format": "avro", "auto.offset.reset": "earliest"})
call("POST", "/consumers/http-readers/instances/one/subscription", {"topics": ["payments"]})
records = []
for _ in range(20):
    records += call("GET", "/consumers/http-readers/instances/one/records?timeout=500", accept=AVRO)
    if records:
        break
assert [r["value"] for r in records] == [{"id": 3, "note": {"string": "from python"}}], records
print("AvroSerializer's record read over HTTP:", records[0]["value"])
call("DELETE", "/consumers/http-readers/instances/one")
print("all checks passed")
