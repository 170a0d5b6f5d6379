//! The `weir` command line: every subcommand and flag, with the help texts users see.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "weir",
    version,
    about = "An event-streaming platform in one binary: a durable partitioned log with consumer groups, and the systems built on it.",
    long_about = "An event-streaming platform in one binary: a durable partitioned log with consumer groups, and the systems built on it.\n\n\
        Commands open the data directory themselves (one process at a time owns it), so stop `weir up` before running \
        `weir topics`, `weir produce` or `weir consume` against the same --data-dir — or give them --server to act on a \
        running weir (or any Kafka cluster) over the Kafka protocol instead.\n\n\
        Every setting can also come from a TOML file (--config) or a WEIR_* environment variable; flags win over the \
        environment, which wins over the file. Log settings use Kafka's names: WEIR_LOG_FSYNC=always, \
        WEIR_LOG_RETENTION_MS=3600000, and `[log]` in the file."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    /// `None` for a system's own subcommand (`weir wedding ...`), added at run time from the registry
    /// (`systems.rs`) and dispatched by name.
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// The whole command line: the built-in commands, then each system's (`weir <system> ...`).
    pub fn command_with_systems() -> clap::Command {
        use clap::CommandFactory;
        let mut cmd = Cli::command().subcommand_required(true).arg_required_else_help(true);
        for system in crate::systems::all() {
            if let Some(sub) = system.command() {
                cmd = cmd.subcommand(sub);
            }
        }
        cmd
    }
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Where topics, offsets and groups are stored.
    #[arg(long, global = true, env = "WEIR_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// A TOML settings file; with `topics create`, also KEY=VALUE topic settings (repeatable).
    #[arg(long, global = true, value_name = "FILE|KEY=VALUE")]
    pub config: Vec<String>,
    /// Act on a running weir, or any Kafka cluster, over the Kafka protocol instead of opening --data-dir
    /// (`topics`, `produce`, `consume`, `groups`). Credentials for SASL/PLAIN go before an `@`; WEIR_SERVER keeps
    /// them off the command line.
    #[arg(
        long,
        global = true,
        env = "WEIR_SERVER",
        value_name = "[USER:PASSWORD@]HOST:PORT[,HOST:PORT]",
        hide_env_values = true
    )]
    pub server: Option<String>,
    /// Log filter, e.g. `info`, `weir=debug`, `librdkafka=info` (also RUST_LOG). librdkafka's own messages are off
    /// by default: a command that cannot reach its server says so in its error.
    #[arg(long, global = true, env = "WEIR_LOG_LEVEL", default_value = "warn,librdkafka=off", value_name = "FILTER")]
    pub log_level: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the platform in the foreground and show it working (Ctrl-C stops it cleanly).
    Up(UpArgs),
    /// Create, list, describe and delete topics.
    #[command(subcommand)]
    Topics(TopicsCommand),
    /// Produce records: lines from stdin, or generated load with --count.
    Produce(ProduceArgs),
    /// Print records, one per line.
    Consume(ConsumeArgs),
    /// Inspect consumer groups.
    #[command(subcommand)]
    Groups(GroupsCommand),
    /// Show and replay dead letters: records a handler gave up on, in `<TOPIC>.dlq`.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Manage the schema registry's subjects and schemas (Avro, JSON Schema, Protobuf), kept in the `_schemas` topic.
    #[command(
        subcommand,
        long_about = "Manage the schema registry's subjects and schemas (Avro, JSON Schema, Protobuf).\n\n\
            The registry keeps everything in the `_schemas` topic: these commands read and write it on --data-dir, or \
            with --server on a running weir (whose registry sees the change at once) or a Kafka cluster that weir \
            instances share. Registering checks compatibility with the subject's earlier versions under its level, as \
            the registry's REST API (`weir up`, port 8081) does."
    )]
    Schemas(SchemasCommand),
    /// Measure throughput, latency and memory: the log, the wire, HTTP, the runtime and the analytics pipeline.
    #[command(subcommand)]
    Bench(crate::commands::bench::BenchCommand),
    /// Manage users: SCRAM passwords (Kafka SASL/SCRAM and PLAIN, HTTP Basic) and bearer tokens (HTTP).
    #[command(
        subcommand,
        long_about = "Manage users: SCRAM passwords (Kafka SASL/SCRAM-SHA-256 and -512, SASL/PLAIN, HTTP Basic) and \
            bearer tokens (HTTP `Authorization: Bearer`).\n\n\
            Users live in <DATA_DIR>/security/users.jsonl, which holds salted SCRAM hashes and the SHA-256 of each \
            token, never a password or a token. A running `weir up` on the same --data-dir picks up a change within \
            a second: these commands need not stop it. Users in the settings file's [kafka.users] are listed too, \
            but are changed there. Whether clients must authenticate is `[security] require_authentication`; what \
            they may do once they have is `weir acls`."
    )]
    Users(UsersCommand),
    /// Manage ACLs: which principal may do which operation on which topic, group, cluster or system.
    #[command(
        subcommand,
        long_about = "Manage ACLs, in Kafka's model and with kafka-acls.sh's words: a principal (User:alice, or \
            User:* for everyone) is allowed or denied an operation, from a host (an IP address, or * for any), on a \
            resource: a topic, a group, the cluster, a transactional id, or one of weir's systems (its HTTP routes). \
            The resource name is literal (`*` for every resource of the type) or, with --prefixed, a prefix.\n\n\
            They are enforced when the settings file says `[security] authorizer = \"acl\"`: then a request no ACL \
            allows is denied, a DENY wins over any ALLOW, and `super_users` may do everything. As in Kafka, READ, \
            WRITE, DELETE and ALTER imply DESCRIBE, and ALTER_CONFIGS implies DESCRIBE_CONFIGS.\n\n\
            ACLs live in <DATA_DIR>/security/acls.jsonl; a running `weir up` picks up a change within a second. \
            Kafka clients can manage the same ACLs (kafka-acls.sh --bootstrap-server) through a running weir."
    )]
    Acls(AclsCommand),
    /// Make TLS certificates for trying TLS and mutual TLS locally.
    #[command(subcommand)]
    Certs(CertsCommand),
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Which systems to run: `all`, `none`, or a comma-separated list (analytics, wedding, repair, dispatch, waitroom).
    #[arg(long, default_value = "all", value_name = "all|none|LIST")]
    pub systems: String,
    /// A system's setting, over its `[systems.<name>]` table and the environment (repeatable), e.g.
    /// `--set wedding.policy=fifo`, `--set analytics.grace_period_seconds=10`.
    #[arg(long = "set", value_name = "SYSTEM.KEY=VALUE")]
    pub set: Vec<String>,
    /// Dispatch: when the relay sweeps for events written by other processes, as a cron expression (seconds
    /// first, optional), or `none`; default `*/15 * * * * *` (every 15 s). Short for `--set dispatch.relay_schedule=`.
    #[arg(long, value_name = "CRON")]
    pub relay_schedule: Option<String>,
    /// Dispatch: an event goes only to reviewers of its region, and waits while none is active. Short for
    /// `--set dispatch.by_region=true`.
    #[arg(long)]
    pub dispatch_by_region: bool,
    /// Waitroom: where its gRPC API (`waitroom.v1.WaitroomService`) listens, or `none`; default 127.0.0.1:50056.
    /// Short for `--set waitroom.grpc_listen=`.
    #[arg(long, value_name = "HOST:PORT|none")]
    pub grpc_listen: Option<String>,
    /// Waitroom: its topics' names, `dotted` (queue.ready, checkout.completed, ...: the origin's today) or `seed`
    /// (QUEUE_READY, CHECKOUT_COMPLETED, ...). Short for `--set waitroom.topics=`.
    #[arg(long, value_name = "dotted|seed")]
    pub waitroom_topics: Option<String>,
    /// Seconds between status lines.
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    pub status_every: u64,
    /// Stop after this many seconds (default: run until Ctrl-C or SIGTERM).
    #[arg(long, value_name = "SECONDS")]
    pub run_for: Option<u64>,
    /// Address of the Kafka wire-protocol listener (`none` to disable).
    #[arg(long, default_value = "127.0.0.1:9092", value_name = "ADDR|none", env = "WEIR_KAFKA_LISTEN")]
    pub kafka_listen: String,
    /// HOST:PORT that Kafka clients are told to connect to (default: the listen address).
    #[arg(long, value_name = "HOST:PORT", env = "WEIR_KAFKA_ADVERTISED")]
    pub kafka_advertised: Option<String>,
    /// Largest Kafka request accepted; a larger one closes its connection (Kafka's socket.request.max.bytes).
    #[arg(long, default_value_t = 100 << 20, value_name = "BYTES", env = "WEIR_KAFKA_MAX_REQUEST_BYTES")]
    pub kafka_max_request_bytes: usize,
    /// Most Kafka connections served at once (Kafka's max.connections); further ones are closed on arrival. Lowered
    /// at start if the open-file limit (`ulimit -n`) cannot hold them.
    #[arg(long, default_value_t = 1000, value_name = "N", env = "WEIR_KAFKA_MAX_CONNECTIONS")]
    pub kafka_max_connections: usize,
    /// A Kafka connection that sends nothing for this long is closed (Kafka's connections.max.idle.ms).
    #[arg(long, default_value_t = 600_000, value_name = "MS", env = "WEIR_KAFKA_IDLE_TIMEOUT_MS")]
    pub kafka_idle_timeout_ms: u64,
    /// The SQL store systems write to (and the runtime keeps exactly-once offsets, processed events, the outbox and
    /// the key-value table in): default SQLite in --data-dir (WAL); `postgres://USER:PASSWORD@HOST/DB` for scale.
    #[arg(long, value_name = "URL", env = "WEIR_DATABASE", hide_env_values = true)]
    pub database: Option<String>,
    /// Keep sessions and counters in Redis (`redis://HOST:PORT/DB`), shared between weir processes; default: the SQL
    /// store's key-value table.
    #[arg(long, value_name = "URL", env = "WEIR_REDIS", hide_env_values = true)]
    pub redis: Option<String>,
    /// Address of the HTTP API (REST Proxy v2 produce/consume, /health, /metrics, /openapi.json; `none` to disable).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR|none", env = "WEIR_HTTP_LISTEN")]
    pub http_listen: String,
    /// Address of a second HTTP listener serving the REST Proxy v2 API alone (topics, produce, consumers), on
    /// Confluent REST Proxy's port; the HTTP API's users, ACLs, TLS and limits apply, and it shares its consumer
    /// instances (`none` to disable; none on a `--bus kafka://` cluster).
    #[arg(long, default_value = "127.0.0.1:8082", value_name = "ADDR|none", env = "WEIR_REST_PROXY_LISTEN")]
    pub rest_proxy_listen: String,
    /// Address of the schema registry (Confluent's Schema Registry REST API: Avro, JSON Schema and Protobuf schemas,
    /// kept in the `_schemas` topic; the HTTP API's users, ACLs and TLS apply; `none` to disable).
    #[arg(long, default_value = "127.0.0.1:8081", value_name = "ADDR|none", env = "WEIR_SCHEMA_REGISTRY_LISTEN")]
    pub schema_registry_listen: String,
    /// The schema registry's compatibility level for subjects that configure none (Confluent's
    /// `schema.compatibility.level`): none, backward, backward_transitive, forward, forward_transitive, full or
    /// full_transitive.
    #[arg(long, default_value = "backward", value_name = "LEVEL", env = "WEIR_SCHEMA_COMPATIBILITY")]
    pub schema_compatibility: String,
    /// Largest HTTP request body accepted; a larger one gets 413.
    #[arg(long, default_value_t = 64 << 20, value_name = "BYTES", env = "WEIR_HTTP_MAX_BODY_BYTES")]
    pub http_max_body_bytes: usize,
    /// Most records one HTTP produce request may hold; more get 413.
    #[arg(long, default_value_t = 100_000, value_name = "N", env = "WEIR_HTTP_MAX_RECORDS")]
    pub http_max_records: usize,
    /// Most HTTP connections open at once; past it a new one gets 503 and is closed. Lowered at start if the
    /// open-file limit (`ulimit -n`) cannot hold them.
    #[arg(long, default_value_t = 1024, value_name = "N", env = "WEIR_HTTP_MAX_CONNECTIONS")]
    pub http_max_connections: usize,
    /// An HTTP connection with no request in progress is closed after this long without a byte.
    #[arg(long, default_value_t = 60_000, value_name = "MS", env = "WEIR_HTTP_IDLE_TIMEOUT_MS")]
    pub http_idle_timeout_ms: u64,
    /// Where the systems publish and consume: `embedded` (this process's own broker), or an existing Kafka cluster
    /// (or another weir) as `kafka://[USER:PASSWORD@]HOST:PORT[,HOST:PORT]`, in which case this process opens no data
    /// directory and starts no Kafka listener.
    #[arg(
        long,
        default_value = "embedded",
        value_name = "embedded|kafka://HOST:PORT",
        env = "WEIR_BUS",
        hide_env_values = true
    )]
    pub bus: String,
    /// Check the configuration and exit without opening anything: the chosen systems and their settings, the form
    /// of the --bus, --database and --redis URLs, the security settings with the user and ACL files, and the TLS
    /// certificates and keys (for a deployment's files, before they are rolled out).
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create a topic.
    ///
    /// Settings: --config KEY=VALUE (repeatable) with segment.bytes, segment.ms, retention.ms,
    /// retention.bytes, fsync (always|interval|never), fsync.interval.ms, fsync.interval.bytes, max.message.bytes,
    /// message.timestamp.type, index.interval.bytes, cleanup.policy (delete, or compact: every record kept, as
    /// weir does not compact yet).
    Create {
        /// Topic name: 1-249 characters from a-z, A-Z, 0-9, '.', '_', '-'.
        name: String,
        /// Number of partitions (fixed for the topic's life).
        #[arg(long, short, default_value_t = 1)]
        partitions: i64,
        // Topic settings come through the global `--config KEY=VALUE` (Kafka's spelling): segment.bytes, segment.ms,
        // retention.ms, retention.bytes, fsync (always|interval|never), fsync.interval.ms, fsync.interval.bytes,
        // max.message.bytes, message.timestamp.type, index.interval.bytes.
    },
    /// List topic names.
    List,
    /// Show a topic's partitions (offsets, size) and settings.
    Describe {
        /// Topic name.
        name: String,
    },
    /// Delete a topic, its data and its groups' committed offsets.
    Delete {
        /// Topic name.
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Topic to write to (created with the default partition count if missing and auto-creation is on).
    pub topic: String,
    /// Split each input line at the first SEP into key and value.
    #[arg(long, value_name = "SEP")]
    pub key_separator: Option<String>,
    /// Send to this partition instead of choosing by key.
    #[arg(long)]
    pub partition: Option<i32>,
    /// Generate this many records instead of reading stdin.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Value size of generated records, in bytes.
    #[arg(long, default_value_t = 100, value_name = "BYTES", requires = "count")]
    pub size: usize,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Encode each input line, a JSON value, with this subject's schema (Avro, JSON Schema or Protobuf) and frame it
    /// with the schema id, as Confluent's serializers do; the registry is the one in `_schemas`. A line that does not
    /// fit stops the command, naming it.
    #[arg(long, value_name = "SUBJECT", conflicts_with = "count")]
    pub schema: Option<String>,
    /// The subject's version to encode with (a number or `latest`).
    #[arg(long, value_name = "VERSION", default_value = "latest", requires = "schema")]
    pub schema_version: String,
    /// Encode each input line with this schema file instead (`.avsc`, `.proto`, or a JSON Schema with
    /// `--schema-type json`), registered first (or found, when it is there already) under the subject
    /// `--subject-strategy` names, as Confluent's serializers do with `auto.register.schemas`.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["count", "schema"])]
    pub schema_file: Option<String>,
    /// The format of --schema-file: by default PROTOBUF for a `.proto` file and AVRO otherwise.
    #[arg(long, value_name = "avro|json|protobuf", requires = "schema_file")]
    pub schema_type: Option<String>,
    /// How the subject of --schema-file is named: `topic` (`<topic>-value`), `record` (the full name of the record
    /// the schema defines: one topic can carry several types) or `topic-record` (`<topic>-<record name>`);
    /// Confluent's class names (io.confluent.kafka.serializers.subject.RecordNameStrategy, ...) are taken too.
    #[arg(long, value_name = "STRATEGY", default_value = "topic", requires = "schema_file")]
    pub subject_strategy: String,
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Topic to read.
    pub topic: String,
    /// Consume as a member of this group, committing what was printed.
    #[arg(long, short)]
    pub group: Option<String>,
    /// Start from the earliest record (default: only new records, or the group's committed offsets).
    #[arg(long, conflicts_with_all = ["offset", "timestamp"])]
    pub from_beginning: bool,
    /// Start at this offset (in every partition, or only --partition).
    #[arg(long, conflicts_with = "timestamp")]
    pub offset: Option<i64>,
    /// Start at the first record with a timestamp at or after this many milliseconds since the epoch.
    #[arg(long, value_name = "MS")]
    pub timestamp: Option<i64>,
    /// Read only this partition.
    #[arg(long)]
    pub partition: Option<i32>,
    /// Exit after printing N records.
    #[arg(long, value_name = "N")]
    pub max: Option<u64>,
    /// Exit when no record arrives for this many milliseconds (default: wait forever).
    #[arg(long, value_name = "MS")]
    pub idle_timeout_ms: Option<u64>,
    /// Print the key before the value, separated by a tab.
    #[arg(long)]
    pub print_key: bool,
    /// Print partition, offset and timestamp before the value, tab-separated.
    #[arg(long)]
    pub print_offset: bool,
    /// Decode keys and values framed with a schema id (Confluent's wire format) through the schema registry in
    /// `_schemas`, printing them as JSON; others are printed as they are.
    #[arg(long)]
    pub decode: bool,
}

#[derive(Debug, Subcommand)]
pub enum GroupsCommand {
    /// List consumer groups.
    List,
    /// Show a group's state, members, assignments, committed offsets and lag.
    Describe {
        /// Group id.
        group: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Print each dead letter of TOPIC: where it came from, attempts, first failure (ms since the epoch), error.
    List {
        /// The original topic (its dead letters are in TOPIC + suffix).
        topic: String,
        /// Suffix of the dead-letter topic.
        #[arg(long, default_value = ".dlq")]
        suffix: String,
    },
    /// Re-publish dead letters to the topic they came from (once: the replay group remembers what it sent).
    Replay {
        topic: String,
        #[arg(long, default_value = ".dlq")]
        suffix: String,
        /// Replay at most N letters.
        #[arg(long, value_name = "N")]
        max: Option<u64>,
    },
}

/// A schema file and its format, for `weir schemas register` and `check`.
#[derive(Debug, Args)]
pub struct SchemaSource {
    /// The schema: a file (`.avsc`, `.json`, `.proto`), or `-` for stdin.
    pub file: String,
    /// Its format: by default PROTOBUF for a `.proto` file and AVRO otherwise; JSON Schema is `--type json`.
    #[arg(long = "type", value_name = "avro|json|protobuf")]
    pub schema_type: Option<String>,
    /// A reference to another subject's version, as NAME=SUBJECT:VERSION (the name the schema uses for it: an Avro
    /// full name, a JSON Schema `$ref`, a Protobuf import); repeatable.
    #[arg(long = "reference", value_name = "NAME=SUBJECT:VERSION")]
    pub references: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum SchemasCommand {
    /// List subjects, each with its latest version and schema id.
    List {
        /// Include soft-deleted subjects.
        #[arg(long)]
        deleted: bool,
        /// Only subjects starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// Print a schema: a subject's version (the latest by default), or by id.
    Get {
        /// The subject; or give --id.
        #[arg(required_unless_present = "id", conflicts_with = "id")]
        subject: Option<String>,
        /// A version number, or `latest`.
        #[arg(long, default_value = "latest")]
        version: String,
        /// A schema id instead of a subject.
        #[arg(long)]
        id: Option<i32>,
    },
    /// Register a schema under a subject (checked against its earlier versions); prints its id and version.
    Register {
        subject: String,
        #[command(flatten)]
        source: SchemaSource,
    },
    /// Check a schema against a subject's versions under its compatibility level; exits 1 when it is incompatible,
    /// printing why.
    Check {
        subject: String,
        #[command(flatten)]
        source: SchemaSource,
        /// Check against this version only (a number or `latest`) instead of what the level asks.
        #[arg(long)]
        version: Option<String>,
    },
    /// Delete a subject's version (or all its versions): soft, or for good with --permanent once soft-deleted.
    Delete {
        subject: String,
        /// One version (a number or `latest`); all of them by default.
        #[arg(long)]
        version: Option<String>,
        #[arg(long)]
        permanent: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Add a user, or set an existing user's password (both SCRAM-SHA-256 and SCRAM-SHA-512).
    ///
    /// The password is one line read from stdin (`echo "$PW" | weir users add alice`), or --password. It is never
    /// printed nor stored: only its salted SCRAM hashes are.
    Add {
        /// The user name; its principal, for ACLs, is User:NAME.
        name: String,
        /// Read the password from stdin, one line (also what happens without --password).
        #[arg(long, conflicts_with = "password")]
        password_stdin: bool,
        /// The password itself. Other users of the machine can see a command line: prefer stdin.
        #[arg(long, value_name = "PASSWORD")]
        password: Option<String>,
        /// PBKDF2 iterations of the SCRAM hashes (Kafka's bounds: 4096 to 16384). More is slower to check and to
        /// guess.
        #[arg(long, default_value_t = 4096, value_name = "N")]
        iterations: u32,
    },
    /// Remove a user with its passwords and tokens.
    Remove {
        /// The user name.
        name: String,
    },
    /// List users: their SCRAM mechanisms with iteration counts, the ids of their tokens, and which come from the
    /// settings file.
    List,
    /// Issue a bearer token for HTTP (`Authorization: Bearer TOKEN`), adding the user if new.
    ///
    /// The token is printed once, alone on stdout (`TOKEN=$(weir users token ci)`); only its SHA-256 is kept, so it
    /// cannot be shown again. Removing the user revokes its tokens.
    Token {
        /// The user name the token authenticates as.
        name: String,
    },
}

/// Which resources `weir acls` acts on: at most one of these.
#[derive(Debug, Args)]
#[group(id = "resource", multiple = false)]
pub struct AclResource {
    /// A topic; `*` for every topic.
    #[arg(long, value_name = "TOPIC")]
    pub topic: Option<String>,
    /// A consumer group; `*` for every group.
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// The cluster (creating topics, idempotent writes, describing and altering the cluster's configs).
    #[arg(long)]
    pub cluster: bool,
    /// A transactional id; `*` for every one.
    #[arg(long, value_name = "ID")]
    pub transactional_id: Option<String>,
    /// One of weir's systems, whose HTTP routes READ (GET, HEAD) and WRITE (other methods) guard; `*` for all.
    #[arg(long, value_name = "SYSTEM")]
    pub system: Option<String>,
    /// A schema registry subject (e.g. orders-value): READ to fetch and check its schemas, WRITE to register, DELETE,
    /// DESCRIBE_CONFIGS and ALTER_CONFIGS for its compatibility level and mode; `*` for every one.
    #[arg(long, value_name = "SUBJECT")]
    pub subject: Option<String>,
}

#[derive(Debug, Args)]
#[group(id = "permission", required = true, multiple = true)]
pub struct AclPrincipals {
    /// Allow this principal (User:NAME, or User:* for every user; repeatable).
    #[arg(long, value_name = "PRINCIPAL")]
    pub allow: Vec<String>,
    /// Deny this principal (repeatable); a DENY wins over any ALLOW.
    #[arg(long, value_name = "PRINCIPAL")]
    pub deny: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum AclsCommand {
    /// Add ACLs: one per principal, host and operation given
    ///
    /// Examples:
    ///   weir acls add --allow User:alice --operation write --topic orders
    ///   weir acls add --allow User:bob --operation read --operation describe --topic orders- --prefixed
    ///   weir acls add --allow User:bob --operation read --group billing
    ///   weir acls add --allow 'User:*' --operation read --system analytics
    ///
    /// Operations: all, read, write, create, delete, alter, describe, cluster_action, describe_configs,
    /// alter_configs, idempotent_write; each resource type takes only some (an error lists them).
    #[command(verbatim_doc_comment)]
    Add {
        #[command(flatten)]
        principals: AclPrincipals,
        /// The client address the ACL applies to: an IP address, or * for any (repeatable).
        #[arg(long, value_name = "HOST", default_value = "*")]
        host: Vec<String>,
        /// The operation (repeatable).
        #[arg(long, value_name = "OPERATION", required = true)]
        operation: Vec<String>,
        #[command(flatten)]
        resource: AclResource,
        /// The name is a prefix: the ACL covers every resource whose name starts with it.
        #[arg(long)]
        prefixed: bool,
    },
    /// List ACLs, one per line, all or those the selectors match.
    List {
        #[command(flatten)]
        filter: AclFilterArgs,
    },
    /// Remove the ACLs the selectors match (all of them only with --all), printing each.
    Remove {
        #[command(flatten)]
        filter: AclFilterArgs,
        /// Remove every ACL.
        #[arg(long, conflicts_with_all = ["principal", "host", "operation", "resource", "prefixed", "matching"])]
        all: bool,
    },
}

/// Which ACLs `weir acls list` and `weir acls remove` act on: those matching every selector given.
#[derive(Debug, Args)]
pub struct AclFilterArgs {
    /// Only this principal's ACLs (User:NAME; User:* names the ACLs for everyone, not every principal).
    #[arg(long, value_name = "PRINCIPAL")]
    pub principal: Option<String>,
    /// Only ACLs for this host (an IP address, or * for those applying to any).
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Only ACLs for this operation.
    #[arg(long, value_name = "OPERATION")]
    pub operation: Option<String>,
    #[command(flatten)]
    pub resource: AclResource,
    /// With a resource: its prefixed ACLs with that exact prefix (default: its literal ACLs, as kafka-acls.sh).
    #[arg(long, requires = "resource")]
    pub prefixed: bool,
    /// With a resource: every ACL that applies to it, literal, `*` and prefixes alike.
    #[arg(long, requires = "resource", conflicts_with = "prefixed")]
    pub matching: bool,
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Write a throwaway CA, a server certificate and a client certificate (PEM, valid 365 days), and print the
    /// [security.tls] settings and client commands that use them.
    ///
    /// Files: ca.pem and ca-key.pem (the CA), server.pem and server-key.pem (for the listeners), client.pem and
    /// client-key.pem (for mutual TLS; its principal is User:CN=NAME,O=weir). Files of those names in DIR are
    /// replaced. For local development and tests only: use certificates from your own CA in production.
    Dev {
        /// Where to write them (default: <DATA_DIR>/certs).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// A DNS name or IP address the server certificate is valid for (repeatable; default: localhost and
        /// 127.0.0.1).
        #[arg(long, value_name = "HOST")]
        host: Vec<String>,
        /// The client certificate's common name.
        #[arg(long, default_value = "client", value_name = "NAME")]
        client: String,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
