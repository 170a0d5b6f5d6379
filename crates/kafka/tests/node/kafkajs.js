// kafkajs against weir: transactions (commit visible, abort hidden under read_committed, offsets sent to the
// transaction) and the admin client (partitions, topic settings, records, groups, cluster).
//
// Usage: node kafkajs.js HOST:PORT (kafkajs from NODE_PATH; scripts/test.sh installs it into ~/.cache/weir/node).
// Prints "ok <scenario>" after each and exits non-zero on the first wrong observation. Driven by
// crates/kafka/tests/kafkajs.rs, which creates the topics `js` (2 partitions), `js-in` (20 records) and `js-out` first.
const { Kafka, logLevel } = require("kafkajs");

const kafka = new Kafka({ clientId: "weir-test", brokers: [process.argv[2]], logLevel: logLevel.NOTHING });

function expect(cond, what) {
  if (!cond) {
    console.log(`FAILED: ${what}`);
    process.exit(1);
  }
}

async function readAll(topic, readUncommitted) {
  const consumer = kafka.consumer({ groupId: `reader-${Math.random()}`, readUncommitted, maxWaitTimeInMs: 100 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const values = [];
  let last = Date.now();
  await consumer.run({
    eachMessage: async ({ message }) => {
      values.push(message.value.toString());
      last = Date.now();
    },
  });
  const started = Date.now();
  while (Date.now() - last < 2000 || (values.length === 0 && Date.now() - started < 8000)) {
    await new Promise((r) => setTimeout(r, 200));
  }
  await consumer.disconnect();
  return values.sort();
}

async function transactions() {
  const producer = kafka.producer({ transactionalId: "js-tx", maxInFlightRequests: 1, idempotent: true });
  await producer.connect();
  let tx = await producer.transaction();
  await tx.send({ topic: "js", messages: [0, 1, 2, 3].map((i) => ({ key: `k${i}`, value: `c-${i}` })) });
  await tx.commit();
  tx = await producer.transaction();
  await tx.send({ topic: "js", messages: [0, 1, 2].map((i) => ({ value: `a-${i}` })) });
  await tx.abort();
  const committed = await readAll("js", false);
  expect(JSON.stringify(committed) === JSON.stringify(["c-0", "c-1", "c-2", "c-3"]), `read_committed saw ${committed}`);
  const all = await readAll("js", true);
  expect(all.length === 7, `read_uncommitted saw ${all}`);
  console.log("ok kafkajs-commit-and-abort");

  // Consume-transform-produce: offsets committed with the transaction.
  const consumer = kafka.consumer({ groupId: "js-relay", readUncommitted: false, maxWaitTimeInMs: 100 });
  await consumer.connect();
  await consumer.subscribe({ topic: "js-in", fromBeginning: true });
  const got = [];
  await consumer.run({ autoCommit: false, eachMessage: async ({ message }) => got.push(message) });
  const deadline = Date.now() + 20000;
  while (got.length < 20 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  expect(got.length === 20, `the relay consumed ${got.length}`);
  await consumer.disconnect();
  tx = await producer.transaction();
  await tx.send({ topic: "js-out", messages: got.map((m) => ({ value: m.value.toString().replace("in", "out") })) });
  await tx.sendOffsets({ consumerGroupId: "js-relay", topics: [{ topic: "js-in", partitions: [{ partition: 0, offset: "20" }] }] });
  await tx.commit();
  await producer.disconnect();
  const admin = kafka.admin();
  await admin.connect();
  const offsets = await admin.fetchOffsets({ groupId: "js-relay", topics: ["js-in"] });
  expect(offsets[0].partitions[0].offset === "20", `the transaction committed ${JSON.stringify(offsets)}`);
  await admin.disconnect();
  const out = await readAll("js-out", false);
  expect(out.length === 20 && new Set(out).size === 20, `js-out holds ${out}`);
  console.log("ok kafkajs-offsets");
}

async function adminApis() {
  const admin = kafka.admin();
  await admin.connect();
  await admin.createPartitions({ topicPartitions: [{ topic: "js", count: 4 }] });
  const md = await admin.fetchTopicMetadata({ topics: ["js"] });
  expect(md.topics[0].partitions.length === 4, `js has ${md.topics[0].partitions.length} partitions`);
  let refused = false;
  try {
    await admin.createPartitions({ topicPartitions: [{ topic: "js", count: 2 }] });
  } catch (e) {
    refused = /partition/i.test(String(e.message || e.type));
  }
  expect(refused, "shrinking a topic was not refused");
  console.log("ok kafkajs-create-partitions");

  await admin.alterConfigs({
    validateOnly: false,
    resources: [{ type: 2, name: "js", configEntries: [{ name: "retention.ms", value: "7200000" }] }],
  });
  const described = await admin.describeConfigs({ includeSynonyms: false, resources: [{ type: 2, name: "js" }] });
  const retention = described.resources[0].configEntries.find((c) => c.configName === "retention.ms");
  expect(retention.configValue === "7200000", `retention.ms is ${retention.configValue}`);
  console.log("ok kafkajs-alter-configs");

  await admin.deleteTopicRecords({ topic: "js-in", partitions: [{ partition: 0, offset: "5" }] });
  const earliest = await admin.fetchTopicOffsets("js-in");
  expect(earliest[0].low === "5", `the low watermark is ${JSON.stringify(earliest)}`);
  console.log("ok kafkajs-delete-records");

  await admin.deleteGroups(["js-relay"]);
  const groups = (await admin.listGroups()).groups.map((g) => g.groupId);
  expect(!groups.includes("js-relay"), `js-relay still listed: ${groups}`);
  const cluster = await admin.describeCluster();
  expect(cluster.clusterId === "weir" && cluster.brokers.length === 1, JSON.stringify(cluster));
  console.log("ok kafkajs-groups-and-cluster");
  await admin.disconnect();
}

(async () => {
  await transactions();
  await adminApis();
  console.log("ok");
  process.exit(0);
})().catch((e) => {
  console.log(`FAILED: ${e.stack || e}`);
  process.exit(1);
});
