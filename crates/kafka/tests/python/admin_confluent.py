"""confluent-kafka's AdminClient against weir: the admin APIs tools and consoles use, and their refusals.

Usage: python3 admin_confluent.py HOST:PORT. Prints "ok <scenario>" after each and exits non-zero on the first wrong
observation. Driven by crates/kafka/tests/admin.rs, which creates topic `adm` (2 partitions, 30 records in
partition 0) and a group `idle` with committed offsets first, and checks the broker afterwards.
"""
import sys

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewPartitions,
                                   OffsetSpec)

bootstrap = sys.argv[1]
admin = AdminClient({"bootstrap.servers": bootstrap})


def expect(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")


def result(futures):
    return {k: f.result(10) for k, f in futures.items()}


def refused(future, *codes):
    try:
        future.result(10)
    except KafkaException as e:
        err = e.args[0]
        expect(err.code() in codes or err.name() in codes, f"refused with {err}, expected one of {codes}")
        return err
    raise SystemExit(f"FAILED: accepted, expected one of {codes}")


# CreatePartitions: 2 → 5; validate_only changes nothing; shrinking and replica assignments are refused.
result(admin.create_partitions([NewPartitions("adm", 4)], validate_only=True))
md = admin.list_topics("adm", timeout=10)
expect(len(md.topics["adm"].partitions) == 2, "validate_only added partitions")
result(admin.create_partitions([NewPartitions("adm", 5)]))
md = admin.list_topics("adm", timeout=10)
expect(len(md.topics["adm"].partitions) == 5, f"adm has {len(md.topics['adm'].partitions)} partitions")
refused(admin.create_partitions([NewPartitions("adm", 3)])["adm"], "INVALID_PARTITIONS")
refused(admin.create_partitions([NewPartitions("nope", 3)])["nope"], "UNKNOWN_TOPIC_OR_PART", "UNKNOWN_TOPIC_OR_PARTITION")
print("ok create-partitions", flush=True)

# IncrementalAlterConfigs: set and delete, shown by DescribeConfigs as the topic's own; bad input changes nothing.
topic = ConfigResource(ConfigResource.Type.TOPIC, "adm")
entries = [ConfigEntry("retention.ms", "3600000", incremental_operation=AlterConfigOpType.SET),
           ConfigEntry("max.message.bytes", "2000000", incremental_operation=AlterConfigOpType.SET)]
result(admin.incremental_alter_configs([ConfigResource(ConfigResource.Type.TOPIC, "adm", incremental_configs=entries)]))
configs = list(result(admin.describe_configs([topic])).values())[0]
expect(configs["retention.ms"].value == "3600000", f"retention.ms is {configs['retention.ms'].value}")
expect(configs["retention.ms"].source == 1, f"retention.ms source {configs['retention.ms'].source}")  # DYNAMIC_TOPIC_CONFIG
expect(configs["segment.bytes"].source == 5, "an unset key is reported as a default")
bad = [ConfigEntry("no.such.setting", "1", incremental_operation=AlterConfigOpType.SET)]
refused(admin.incremental_alter_configs([ConfigResource(ConfigResource.Type.TOPIC, "adm", incremental_configs=bad)])
        [ConfigResource(ConfigResource.Type.TOPIC, "adm")], "INVALID_CONFIG")
bad = [ConfigEntry("retention.ms", "soon", incremental_operation=AlterConfigOpType.SET)]
refused(admin.incremental_alter_configs([ConfigResource(ConfigResource.Type.TOPIC, "adm", incremental_configs=bad)])
        [ConfigResource(ConfigResource.Type.TOPIC, "adm")], "INVALID_CONFIG")
configs = list(result(admin.describe_configs([topic])).values())[0]
expect(configs["retention.ms"].value == "3600000", "a refused change changed retention.ms")
delete = [ConfigEntry("max.message.bytes", None, incremental_operation=AlterConfigOpType.DELETE)]
result(admin.incremental_alter_configs([ConfigResource(ConfigResource.Type.TOPIC, "adm", incremental_configs=delete)]))
configs = list(result(admin.describe_configs([topic])).values())[0]
expect(configs["max.message.bytes"].source == 5, "DELETE did not restore the default")
print("ok incremental-alter-configs", flush=True)

# AlterConfigs (the legacy, replace-everything form): what is not named goes back to its default.
result(admin.alter_configs([ConfigResource(ConfigResource.Type.TOPIC, "adm", set_config={"segment.ms": "60000"})]))
configs = list(result(admin.describe_configs([topic])).values())[0]
expect(configs["segment.ms"].value == "60000" and configs["retention.ms"].source == 5,
       "AlterConfigs did not replace the topic's settings")
print("ok alter-configs", flush=True)

# DeleteRecords: the low watermark moves; ListOffsets' earliest follows; past the end is refused.
res = admin.delete_records([TopicPartition("adm", 0, 10)])
low = res[TopicPartition("adm", 0, 10)].result(10)
expect(low.low_watermark == 10, f"low watermark {low.low_watermark}")
earliest = admin.list_offsets({TopicPartition("adm", 0): OffsetSpec.earliest()})
expect(list(earliest.values())[0].result(10).offset == 10, "ListOffsets earliest did not move")
bad = admin.delete_records([TopicPartition("adm", 0, 1000)])
refused(list(bad.values())[0], "OFFSET_OUT_OF_RANGE")
print("ok delete-records", flush=True)

# OffsetDelete (confluent-kafka's Python AdminClient has no call for it: kafka-python's does), then DeleteGroups.
from kafka import KafkaAdminClient
from kafka import TopicPartition as KpTopicPartition

kp = KafkaAdminClient(bootstrap_servers=bootstrap)
outcome = kp.delete_group_offsets("idle", [KpTopicPartition("adm", 1)])
expect(all(e.__name__ == "NoError" for e in outcome.values()), f"OffsetDelete: {outcome}")
left = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions("idle")])["idle"].result(10)
expect([(tp.partition, tp.offset) for tp in left.topic_partitions] == [(0, 5)], f"idle keeps {left.topic_partitions}")
kp.close()
result(admin.delete_consumer_groups(["idle"]))
refused(admin.delete_consumer_groups(["idle"])["idle"], "GROUP_ID_NOT_FOUND")
print("ok groups", flush=True)

# DescribeCluster.
cluster = admin.describe_cluster().result(10)
expect(cluster.cluster_id == "weir" and len(cluster.nodes) == 1 and cluster.controller.id == 0, f"{cluster}")
print("ok describe-cluster", flush=True)
print("ok", flush=True)
