"""confluent-kafka (librdkafka) against weir with SCRAM and ACLs: the admin manages ACLs and SCRAM credentials with
the AdminClient, and two users, one that may only produce and one that may only consume, are each refused what they
may not do with Kafka's error codes.

Usage: python3 security_confluent.py HOST:PORT. Driven by crates/kafka/tests/security.rs, whose broker requires
authentication, has the ACL authorizer on, User:admin as its super user and the users admin, producer and consumer
(passwords NAME-pw). Prints "ok <scenario>" after each and exits non-zero on the first wrong observation.
"""
import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType, AdminClient,
                                   ResourcePatternType, ResourceType, ScramCredentialInfo, ScramMechanism,
                                   UserScramCredentialUpsertion)

bootstrap = sys.argv[1]


def expect(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")


def conf(user, mechanism="SCRAM-SHA-512", password=None):
    return {
        "bootstrap.servers": bootstrap,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanisms": mechanism,
        "sasl.username": user,
        "sasl.password": password or f"{user}-pw",
    }


def produce(user, topic, n, mechanism):
    """Produces n records; returns the delivery errors' codes (None for a delivered record)."""
    p = Producer({**conf(user, mechanism), "message.timeout.ms": 10000})
    outcomes = []
    for i in range(n):
        p.produce(topic, f"{user}-{i}".encode(), on_delivery=lambda err, msg: outcomes.append(err.code() if err else None))
    p.flush(15)
    expect(len(outcomes) == n, f"{user}: {len(outcomes)} of {n} deliveries reported")
    return outcomes


def consume(user, topic, group, want, mechanism="SCRAM-SHA-512"):
    """Consumes until `want` records arrive or an error does; returns (values, error codes seen)."""
    errors = []
    c = Consumer({**conf(user, mechanism), "group.id": group, "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, "error_cb": lambda e: errors.append(e.code())})
    c.subscribe([topic])
    values, deadline = [], time.time() + 20
    while time.time() < deadline and len(values) < want and not errors:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            errors.append(m.error().code())
            continue
        values.append(m.value().decode())
    if values:
        c.commit(asynchronous=False)
    c.close()
    return values, errors


admin = AdminClient(conf("admin"))
everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
                              AclPermissionType.ANY)

# The admin (a super user, by SCRAM-SHA-512) grants: producer may write `orders`, consumer may read it in group g.
bindings = [
    AclBinding(ResourceType.TOPIC, "orders", ResourcePatternType.LITERAL, "User:producer", "*", AclOperation.WRITE,
               AclPermissionType.ALLOW),
    AclBinding(ResourceType.TOPIC, "orders", ResourcePatternType.LITERAL, "User:consumer", "*", AclOperation.READ,
               AclPermissionType.ALLOW),
    AclBinding(ResourceType.GROUP, "g", ResourcePatternType.PREFIXED, "User:consumer", "*", AclOperation.READ,
               AclPermissionType.ALLOW),
]
for f in admin.create_acls(bindings, request_timeout=10).values():
    f.result()
listed = admin.describe_acls(everything, request_timeout=10).result()
expect(sorted(map(str, listed)) == sorted(map(str, bindings)), f"describe_acls: {listed}")
bad = AclBinding(ResourceType.GROUP, "g", ResourcePatternType.LITERAL, "User:x", "*", AclOperation.WRITE,
                 AclPermissionType.ALLOW)
try:
    admin.create_acls([bad], request_timeout=10)[bad].result()
    raise SystemExit("FAILED: WRITE on a group was accepted")
except KafkaException as e:
    expect(e.args[0].code() == KafkaError.INVALID_REQUEST, f"WRITE on a group: {e}")
print("ok create-describe-acls", flush=True)

# The producer (SCRAM-SHA-256) may write `orders`, not `other`; it may not consume.
expect(produce("admin", "orders", 1, "SCRAM-SHA-512") == [None], "the admin could not produce")
expect(produce("producer", "orders", 5, "SCRAM-SHA-256") == [None] * 5, "the producer could not write orders")
codes = produce("producer", "other", 2, "SCRAM-SHA-256")
expect(codes == [KafkaError.TOPIC_AUTHORIZATION_FAILED] * 2, f"producer to other: {codes}")
values, errors = consume("producer", "orders", "g1", 1, "SCRAM-SHA-256")
expect(not values and errors and errors[0] in (KafkaError.GROUP_AUTHORIZATION_FAILED,
                                                KafkaError.TOPIC_AUTHORIZATION_FAILED),
       f"the producer consumed: {values} {errors}")
print("ok producer-only", flush=True)

# The consumer (SCRAM-SHA-512) reads all six in group g1 and commits; it may not produce.
values, errors = consume("consumer", "orders", "g1", 6)
expect(len(values) == 6 and not errors, f"the consumer read {values}, errors {errors}")
codes = produce("consumer", "orders", 1, "SCRAM-SHA-512")
expect(codes == [KafkaError.TOPIC_AUTHORIZATION_FAILED], f"consumer produced: {codes}")
values, errors = consume("consumer", "orders", "other-group", 1)
expect(not values and KafkaError.GROUP_AUTHORIZATION_FAILED in errors, f"a group not granted: {values} {errors}")
print("ok consumer-only", flush=True)

# Neither may manage ACLs. (librdkafka drops DescribeAcls' error code, against Kafka too, so the producer's
# listing is empty rather than an error; its CreateAcls is refused with the code.)
producer_admin = AdminClient(conf("producer", "SCRAM-SHA-256"))  # kept alive until its requests are answered
listed = producer_admin.describe_acls(everything, request_timeout=10).result()
expect(listed == [], f"the producer listed ACLs: {listed}")
grant = AclBinding(ResourceType.TOPIC, "other", ResourcePatternType.LITERAL, "User:producer", "*",
                   AclOperation.WRITE, AclPermissionType.ALLOW)
try:
    producer_admin.create_acls([grant], request_timeout=10)[grant].result()
    raise SystemExit("FAILED: the producer granted itself an ACL")
except KafkaException as e:
    expect(e.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED, f"producer create_acls: {e}")
print("ok acls-need-the-cluster", flush=True)

# SCRAM credentials by the AdminClient: a new user dora (salted by the client), then she authenticates.
up = UserScramCredentialUpsertion("dora", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 8192), b"dora-pw")
for f in admin.alter_user_scram_credentials([up], request_timeout=10).values():
    f.result()
described = admin.describe_user_scram_credentials(["dora"], request_timeout=10)["dora"].result()
infos = [(i.mechanism, i.iterations) for i in described.scram_credential_infos]
expect(infos == [(ScramMechanism.SCRAM_SHA_256, 8192)], f"dora's credentials: {infos}")
dora = AdminClient(conf("dora", "SCRAM-SHA-256"))
md = dora.list_topics(timeout=10)
expect("orders" not in md.topics, "dora may not describe orders, so she does not see it")
try:
    AdminClient({**conf("dora", "SCRAM-SHA-256", "wrong")}).list_topics(timeout=5)
    raise SystemExit("FAILED: a wrong password was accepted")
except KafkaException as e:
    expect(e.args[0].code() in (KafkaError._AUTHENTICATION, KafkaError._TRANSPORT, KafkaError._TIMED_OUT,
                                KafkaError.SASL_AUTHENTICATION_FAILED), f"wrong password: {e}")
print("ok scram-credentials", flush=True)

# Deleting the consumer's topic ACL takes its reading away at once.
gone = admin.delete_acls([AclBindingFilter(ResourceType.TOPIC, "orders", ResourcePatternType.LITERAL,
                                           "User:consumer", None, AclOperation.ANY, AclPermissionType.ANY)],
                         request_timeout=10)
removed = [b for f in gone.values() for b in f.result()]
expect(len(removed) == 1 and removed[0].principal == "User:consumer", f"delete_acls removed {removed}")
values, errors = consume("consumer", "orders", "g2", 1)
expect(not values and KafkaError.TOPIC_AUTHORIZATION_FAILED in errors, f"after delete_acls: {values} {errors}")
print("ok delete-acls", flush=True)
