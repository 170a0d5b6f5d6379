//! One module per top-level command; this one dispatches and holds what they share.

mod acls;
pub mod bench;
mod certs;
mod console_cluster;
mod consume;
mod dlq;
mod groups;
mod kafka_client;
mod produce;
mod schemas;
mod topics;
mod up;
mod users;

use std::collections::VecDeque;
use std::future::Future;
use std::io::Write;
use std::sync::Arc;

use anyhow::{Context, Result};
use weir_broker::{Broker, BrokerError};

use crate::cli::{Cli, Command};
use crate::settings::Settings;

pub async fn run(cli: Cli, matches: clap::ArgMatches) -> Result<()> {
    // `--config` is both the settings file (Kafka tools' habit would be a properties file) and, for `topics create`,
    // Kafka's `--config key=value`: tell them apart by the `=`.
    let (topic_configs, files): (Vec<String>, Vec<String>) =
        cli.global.config.iter().cloned().partition(|c| c.contains('='));
    if files.len() > 1 {
        anyhow::bail!("--config names more than one settings file: {}", files.join(", "));
    }
    let file = files.first().map(std::path::PathBuf::from).or_else(|| std::env::var_os("WEIR_CONFIG").map(Into::into));
    let mut settings = Settings::load(file.as_deref(), cli.global.data_dir.clone())?;
    settings.server = cli.global.server.clone();
    crate::systems::check_file_tables(&settings)?;
    let bench_wire = matches!(cli.command, Some(Command::Bench(bench::BenchCommand::Wire(_))));
    if settings.server.is_some() && matches!(cli.command, Some(Command::Up(_) | Command::Bench(_))) && !bench_wire {
        anyhow::bail!(
            "--server is for topics, produce, consume, groups, dlq, schemas and analytics produce; `weir up --bus kafka://HOST:PORT` runs the systems \
             on a Kafka cluster, and `weir bench wire --server HOST:PORT` measures one"
        );
    }
    // Acting on the local files while the user meant a remote server would change the wrong weir, silently.
    if settings.server.is_some() && matches!(cli.command, Some(Command::Users(_) | Command::Acls(_))) {
        anyhow::bail!(
            "--server (or WEIR_SERVER) is set, but `weir users` and `weir acls` act on --data-dir's security files \
             (a running weir re-reads them within a second); for a remote cluster use Kafka's kafka-acls.sh and \
             kafka-configs.sh --bootstrap-server"
        );
    }
    let creating = matches!(cli.command, Some(Command::Topics(crate::cli::TopicsCommand::Create { .. })));
    if !topic_configs.is_empty() && !creating {
        anyhow::bail!("--config {} is a topic setting; it goes with `weir topics create`", topic_configs[0]);
    }
    let Some(command) = cli.command else {
        return run_system_command(settings, matches).await;
    };
    match command {
        Command::Up(args) => up::run(settings, args).await,
        Command::Topics(cmd) => topics::run(settings, cmd, topic_configs).await,
        Command::Produce(args) => produce::run(settings, args).await,
        Command::Consume(args) => consume::run(settings, args).await,
        Command::Groups(cmd) => groups::run(settings, cmd).await,
        Command::Dlq(cmd) => dlq::run(settings, cmd).await,
        Command::Schemas(cmd) => schemas::run(settings, cmd).await,
        Command::Bench(cmd) => bench::run(settings, cmd).await,
        Command::Users(cmd) => users::run(settings, cmd),
        Command::Acls(cmd) => acls::run(settings, cmd),
        Command::Certs(cmd) => certs::run(settings, cmd),
    }
}

/// `weir <system> ...`: the system's own subcommand, run on the binary's command host.
async fn run_system_command(settings: Settings, matches: clap::ArgMatches) -> Result<()> {
    let (name, sub) = matches.subcommand().context("no command given (see --help)")?;
    let system = crate::systems::find(name).with_context(|| format!("unknown command {name:?}"))?;
    let host = Arc::new(crate::systems::Commands { settings });
    system.run_command(sub.clone(), host).await
}

/// A security error as one line. Its own message already ends with its cause (the I/O error), which the chain
/// `main` prints would repeat.
pub fn one_line(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// Opens the broker on the configured data directory.
pub fn open_broker(settings: &Settings) -> Result<Arc<Broker>> {
    Broker::open(settings.broker.clone()).map_err(|e| {
        let hint = matches!(e, BrokerError::Locked { .. })
            .then_some(" — stop that process first, or point --data-dir elsewhere")
            .unwrap_or("");
        anyhow::anyhow!("{e}{hint}")
    })
}

/// A broker of a command's own in `dir/data`, whose groups join at once: the command's consumers are the only
/// members they will ever have, so Kafka's wait for others to join (`initial_rebalance_delay_ms`) would only delay it.
pub fn scratch_broker(dir: &std::path::Path) -> Result<Arc<Broker>> {
    let mut config = weir_broker::BrokerConfig::new(dir.join("data"));
    config.group.initial_rebalance_delay_ms = 0;
    Broker::open(config).map_err(|e| anyhow::anyhow!("cannot open the scratch broker in {}: {e}", dir.display()))
}

/// Awaits acknowledgements in the order records were sent, keeping at most `limit` outstanding: a fast sender waits
/// for the log instead of queueing without bound. Acks usually complete in order, so awaiting the oldest is cheap.
pub struct AckWindow<F> {
    pending: VecDeque<F>,
    limit: usize,
    totals: AckTotals,
}

#[derive(Debug, Default)]
pub struct AckTotals {
    pub ok: u64,
    pub failed: u64,
    pub first_error: Option<String>,
}

impl<F, T, E> AckWindow<F>
where
    F: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    pub fn new(limit: usize) -> Self {
        AckWindow { pending: VecDeque::with_capacity(limit), limit: limit.max(1), totals: AckTotals::default() }
    }

    pub async fn push(&mut self, ack: F) {
        self.pending.push_back(ack);
        while self.pending.len() > self.limit {
            self.settle_oldest().await;
        }
    }

    async fn settle_oldest(&mut self) {
        if let Some(f) = self.pending.pop_front() {
            match f.await {
                Ok(_) => self.totals.ok += 1,
                Err(e) => {
                    self.totals.failed += 1;
                    self.totals.first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }

    pub async fn finish(mut self) -> AckTotals {
        while !self.pending.is_empty() {
            self.settle_oldest().await;
        }
        self.totals
    }
}

/// Writes a line to stdout; `Ok(false)` when the reader went away (e.g. `| head`), which is not an error.
pub fn print_line(out: &mut impl Write, line: &[u8]) -> Result<bool> {
    match out.write_all(line).and_then(|_| out.write_all(b"\n")) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("cannot write to stdout"),
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
