"""Confluent's own Schema Registry client and serializers (confluent-kafka) against weir's registry.

Usage: registry_confluent.py URL first|again
  first: registers, evolves (allowed and refused), round-trips records through Avro, JSON Schema and Protobuf
         serializers, deletes, configures.
  again: after the registry restarted, everything from `first` is still there.
Prints one line per check; exits non-zero on the first failure.
"""
import sys

import requests

from confluent_kafka.schema_registry import Schema, SchemaReference, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer, ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import timestamp_pb2

url, phase = sys.argv[1], sys.argv[2]
client = SchemaRegistryClient({"url": url})


def check(name, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + name + (f": {detail}" if detail and not ok else ""), flush=True)
    if not ok:
        sys.exit(1)


def refused(name, code, call):
    try:
        call()
    except SchemaRegistryError as e:
        check(name, e.error_code == code, f"error_code {e.error_code}: {e.error_message}")
        return e
    check(name, False, "no error")


PERSON_V1 = """{"type": "record", "name": "Person", "namespace": "shop",
  "fields": [{"name": "name", "type": "string"}, {"name": "age", "type": "int"}]}"""
# Backward compatible: a new field with a default.
PERSON_V2 = """{"type": "record", "name": "Person", "namespace": "shop",
  "fields": [{"name": "name", "type": "string"}, {"name": "age", "type": "int"},
             {"name": "email", "type": ["null", "string"], "default": null}]}"""
# Not backward compatible: a new field without a default.
PERSON_BAD = """{"type": "record", "name": "Person", "namespace": "shop",
  "fields": [{"name": "name", "type": "string"}, {"name": "age", "type": "int"},
             {"name": "phone", "type": "string"}]}"""
ORDER_JSON = """{"type": "object", "title": "Order", "properties": {"id": {"type": "integer"},
  "total": {"type": "number"}}, "required": ["id"]}"""

if phase == "first":
    types = requests.get(url + "/schemas/types", timeout=10)
    check("schema types", sorted(types.json()) == ["AVRO", "JSON", "PROTOBUF"], types.text)
    check("the registry's content type", types.headers["content-type"] == "application/vnd.schemaregistry.v1+json")
    v1 = client.register_schema("people-value", Schema(PERSON_V1, "AVRO"))
    check("register v1 gives an id", isinstance(v1, int) and v1 > 0, v1)
    again = client.register_schema("people-value", Schema(PERSON_V1.replace("\n", " ").replace("  ", " "), "AVRO"))
    check("the same schema written another way gets the same id", again == v1, (again, v1))
    v2 = client.register_schema("people-value", Schema(PERSON_V2, "AVRO"))
    check("a compatible evolution gets a new id", v2 != v1, (v1, v2))
    check("compatibility check says no", not client.test_compatibility("people-value", Schema(PERSON_BAD, "AVRO")))
    e = refused("an incompatible evolution is refused with 409", 409,
                lambda: client.register_schema("people-value", Schema(PERSON_BAD, "AVRO")))
    check("the refusal names the field", "phone" in e.error_message, e.error_message)
    latest = client.get_latest_version("people-value")
    check("latest is version 2", latest.version == 2 and latest.schema_id == v2, latest)
    check("versions", client.get_versions("people-value") == [1, 2])
    found = client.lookup_schema("people-value", Schema(PERSON_V1, "AVRO"))
    check("lookup finds version 1", found.version == 1 and found.schema_id == v1, found)
    refused("an unknown subject is 40401", 40401, lambda: client.get_latest_version("nobody-value"))
    refused("an unknown id is 40403", 40403, lambda: client.get_schema(999999))
    refused("an unparsable schema is 42201", 42201,
            lambda: client.register_schema("broken-value", Schema('{"type": "record", "name": "X"', "AVRO")))

    # Avro round trip through Confluent's serializers, the id framed in the record.
    ser = AvroSerializer(client, PERSON_V2, conf={"auto.register.schemas": False, "use.latest.version": True})
    de = AvroDeserializer(client)
    ctx = SerializationContext("people", MessageField.VALUE)
    framed = ser({"name": "Ada", "age": 36, "email": "ada@example.com"}, ctx)
    check("Avro framing carries the id", framed[0] == 0 and int.from_bytes(framed[1:5], "big") == v2, framed[:5])
    check("Avro round trip", de(framed, ctx) == {"name": "Ada", "age": 36, "email": "ada@example.com"})

    # JSON Schema, registered by the serializer itself.
    jser = JSONSerializer(ORDER_JSON, client)
    jde = JSONDeserializer(ORDER_JSON, schema_registry_client=client)
    jctx = SerializationContext("orders", MessageField.VALUE)
    jframed = jser({"id": 7, "total": 12.5}, jctx)
    check("JSON Schema round trip", jde(jframed, jctx) == {"id": 7, "total": 12.5})
    check("the JSON serializer registered orders-value", "orders-value" in client.get_subjects())

    # Protobuf: the serializer registers the message's file (as a serialized descriptor) and reads it back.
    pser = ProtobufSerializer(timestamp_pb2.Timestamp, client, {"use.deprecated.format": False})
    pde = ProtobufDeserializer(timestamp_pb2.Timestamp, {"use.deprecated.format": False})
    pctx = SerializationContext("times", MessageField.VALUE)
    ts = timestamp_pb2.Timestamp(seconds=1700000000, nanos=5)
    pframed = pser(ts, pctx)
    check("Protobuf round trip", pde(pframed, pctx) == ts)
    pid = int.from_bytes(pframed[1:5], "big")
    check("the Protobuf schema is served", client.get_schema(pid).schema_type == "PROTOBUF")

    # References: a record type from another subject.
    client.register_schema("address", Schema('{"type": "record", "name": "Address", "namespace": "shop", '
                                             '"fields": [{"name": "city", "type": "string"}]}', "AVRO"))
    customer = Schema('{"type": "record", "name": "Customer", "namespace": "shop", "fields": '
                      '[{"name": "address", "type": "shop.Address"}]}', "AVRO",
                      [SchemaReference("shop.Address", "address", 1)])
    cid = client.register_schema("customers-value", customer)
    check("a schema with a reference registers", cid > 0)
    refused("deleting a referenced version is 42206", 42206, lambda: client.delete_version("address", 1))
    missing = Schema('{"type": "record", "name": "Y", "fields": [{"name": "a", "type": "shop.Nowhere"}]}', "AVRO",
                     [SchemaReference("shop.Nowhere", "nowhere", 1)])
    refused("a reference to a missing subject is 42201", 42201, lambda: client.register_schema("y-value", missing))

    # Configuration: a subject's level overrides the global one.
    client.set_compatibility("people-value", "NONE")
    check("subject compatibility", client.get_compatibility("people-value") == "NONE")
    v3 = client.register_schema("people-value", Schema(PERSON_BAD, "AVRO"))
    check("under NONE the change registers", v3 > 0)
    refused("an unknown level is 42203", 42203, lambda: client.set_compatibility("people-value", "SIDEWAYS"))

    # Deleting: soft, then for good.
    scratch = client.register_schema("scratch-value", Schema('"string"', "AVRO"))
    check("soft delete of a subject", client.delete_subject("scratch-value") == [1])
    check("a soft-deleted subject is not listed", "scratch-value" not in client.get_subjects())
    check("permanent delete", client.delete_subject("scratch-value", permanent=True) == [1])
    refused("a permanently deleted subject is gone", 40401, lambda: client.get_versions("scratch-value"))
    print(f"ids {v1} {v2} {pid} {scratch}")
elif phase == "again":
    check("subjects survived", {"people-value", "orders-value", "address", "customers-value"} <= set(client.get_subjects()),
          client.get_subjects())
    latest = client.get_latest_version("people-value")
    check("versions survived", latest.version == 3 and client.get_versions("people-value") == [1, 2, 3], latest)
    check("subject config survived", client.get_compatibility("people-value") == "NONE")
    v4 = client.register_schema("more-value", Schema('{"type": "enum", "name": "Color", "symbols": ["RED"]}', "AVRO"))
    ids = [client.lookup_schema("people-value", Schema(s, "AVRO")).schema_id for s in (PERSON_V1, PERSON_V2, PERSON_BAD)]
    check("ids are never reused after a restart", v4 > max(ids), (v4, ids))
else:
    sys.exit(f"unknown phase {phase}")
print("all checks passed")
