//! What the data commands share when they run with `--server`: librdkafka clients for a running weir, or any Kafka
//! cluster, reached over the Kafka protocol instead of through a data directory. librdkafka's metadata and offset
//! calls block, so they run through [`blocking`] rather than on an async worker.

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::config::{ClientConfig, FromClientConfig};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use weir_runtime::KafkaEndpoint;

/// How long one metadata, offsets or admin call may take before the command gives up.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The server a command talks to.
#[derive(Clone, Debug)]
pub struct Remote {
    endpoint: KafkaEndpoint,
}

impl Remote {
    pub fn new(server: &str) -> Result<Remote> {
        let endpoint = KafkaEndpoint::parse(server).map_err(|e| match e {
            weir_runtime::BusError::Invalid(m) => anyhow!("--server: {m}"),
            e => anyhow!("--server: {e}"),
        })?;
        Ok(Remote { endpoint })
    }

    /// The `host:port` list, for messages.
    pub fn name(&self) -> &str {
        &self.endpoint.bootstrap
    }

    /// A client configuration for this server; each command adds what its client needs.
    pub fn config(&self) -> ClientConfig {
        let mut c = self.endpoint.client_config();
        c.set("client.id", "weir-cli")
            // Fail a command in seconds, not after librdkafka's default of retrying for a minute.
            .set("socket.connection.setup.timeout.ms", "5000");
        c
    }

    pub fn create<T: FromClientConfig>(&self, config: &ClientConfig) -> Result<T> {
        config.create().with_context(|| format!("cannot set up a Kafka client for {}", self.name()))
    }

    pub fn admin(&self) -> Result<AdminClient<DefaultClientContext>> {
        self.create(&self.config())
    }

    /// A consumer outside any group, for metadata and watermarks.
    pub fn metadata_client(&self) -> Result<BaseConsumer> {
        self.create(self.config().set("allow.auto.create.topics", "false"))
    }

    /// Topic names and partition ids (sorted), or one topic's. An unknown topic is an error naming it.
    pub fn topics(&self, client: &BaseConsumer, topic: Option<&str>) -> Result<Vec<RemoteTopic>> {
        let md = blocking(|| client.fetch_metadata(topic, TIMEOUT))
            .map_err(|e| anyhow!("cannot read metadata from {}: {}", self.name(), short(&e)))?;
        let mut out = Vec::new();
        for t in md.topics() {
            match t.error().map(RDKafkaErrorCode::from) {
                None => {}
                Some(RDKafkaErrorCode::UnknownTopicOrPartition) => {
                    anyhow::bail!("unknown topic {:?} on {}", t.name(), self.name())
                }
                Some(code) => anyhow::bail!("topic {:?} on {}: {code}", t.name(), self.name()),
            }
            let mut partitions: Vec<RemotePartition> = t
                .partitions()
                .iter()
                .map(|p| RemotePartition {
                    id: p.id(),
                    error: p.error().map(|e| RDKafkaErrorCode::from(e).to_string()),
                })
                .collect();
            partitions.sort_by_key(|p| p.id);
            out.push(RemoteTopic { name: t.name().to_string(), partitions });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// `(log start offset, log end offset)` of one partition.
    pub fn watermarks(&self, client: &BaseConsumer, topic: &str, partition: i32) -> Result<(i64, i64)> {
        blocking(|| client.fetch_watermarks(topic, partition, TIMEOUT))
            .map_err(|e| anyhow!("cannot read the offsets of {topic}-{partition} from {}: {}", self.name(), short(&e)))
    }
}

#[derive(Clone, Debug)]
pub struct RemoteTopic {
    pub name: String,
    pub partitions: Vec<RemotePartition>,
}

#[derive(Clone, Debug)]
pub struct RemotePartition {
    pub id: i32,
    /// The leader's error for this partition, e.g. an offline partition on weir.
    pub error: Option<String>,
}

/// librdkafka's error without the wrapper's repetition ("Meta data fetch error: X (Local: x): X (Local: x)").
pub fn short(e: &KafkaError) -> String {
    e.rdkafka_error_code().map_or_else(|| e.to_string(), |c| c.to_string())
}

/// Runs a blocking librdkafka call without stalling the async workers.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}
