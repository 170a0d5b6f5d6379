//! `weir bench console`: the web console's API over the embedded broker at the scale the console is meant for:
//! --topics topics of --partitions partitions each (1,000 × 10 by default), a record in every partition and a group
//! with offsets committed on a tenth of them. Each page's request is timed over --rounds, in-process (the console's
//! router called directly, so the figures are the server's work, without a socket or a browser): the overview
//! (every partition and group described, as each live snapshot is), a page of the topics list, a topic's page, a page of its
//! messages, the groups list and the group's page; with the process's resident memory.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use axum::body::Body;
use axum::http::Request;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tower::ServiceExt;
use weir_broker::{Broker, BrokerConfig, ProduceRecord};

use super::rss_bytes;

#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// Topics to create.
    #[arg(long, default_value_t = 1000)]
    topics: usize,
    /// Partitions of each topic.
    #[arg(long, default_value_t = 10)]
    partitions: i32,
    /// Times each request is made (the median and the slowest are reported).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Scratch directory (default: a new one under the system temp dir; removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print results as JSON lines.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: ConsoleArgs) -> Result<()> {
    if args.topics == 0 || args.partitions < 1 || args.rounds == 0 {
        bail!("--topics, --partitions and --rounds must be at least 1");
    }
    // Three files a partition stay open: raise the soft limit as `weir up` does.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let (dir, remove) = match &args.dir {
        Some(d) => (d.clone(), false),
        None => (std::env::temp_dir().join(format!("weir-bench-console-{}", std::process::id())), true),
    };
    let outcome = measure(&args, &dir).await;
    if remove {
        let _ = std::fs::remove_dir_all(&dir);
    }
    outcome
}

async fn measure(args: &ConsoleArgs, dir: &std::path::Path) -> Result<()> {
    let broker = Broker::open(BrokerConfig::new(dir)).context("cannot open the scratch broker")?;
    let bar = ProgressBar::new(args.topics as u64).with_message("creating topics");
    bar.set_style(
        ProgressStyle::with_template("{msg} {bar:30} {pos}/{len}").unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let producer = broker.clone().producer();
    for t in 0..args.topics {
        let name = format!("t{t:05}");
        broker.create_topic(&name, args.partitions, BTreeMap::new())?;
        let records: Vec<ProduceRecord> = (0..args.partitions)
            .map(|p| ProduceRecord { partition: Some(p), ..ProduceRecord::new(name.clone(), format!("{{\"n\":{p}}}")) })
            .collect();
        for r in records {
            producer.send(r).await?;
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    // A group with offsets on a tenth of the topics (each partition one record behind: none read).
    let group_topics = (args.topics / 10).max(1);
    let offsets = (0..group_topics)
        .flat_map(|t| (0..args.partitions).map(move |p| (format!("t{t:05}"), p, 0i64)))
        .collect::<Vec<_>>();
    let platform: Arc<dyn weir_console::Platform> = Arc::new(weir_console::Embedded(broker.clone()));
    platform.commit_offsets("bench-group", &offsets, "").await?;
    let app = weir_console::router(platform, weir_console::ConsoleInfo::default());

    let middle = format!("t{:05}", args.topics / 2);
    let requests = [
        ("overview", "/console/api/overview".to_string()),
        ("topics page", "/console/api/topics?limit=50&offset=500".to_string()),
        ("topic", format!("/console/api/topics/{middle}")),
        ("messages", format!("/console/api/topics/{middle}/messages?limit=50")),
        ("groups page", "/console/api/groups?limit=50".to_string()),
        ("group", "/console/api/groups/bench-group".to_string()),
    ];
    let partitions = args.topics as i64 * i64::from(args.partitions);
    if !args.json {
        println!("console API over {} topics, {partitions} partitions, {} rounds each:", args.topics, args.rounds);
    }
    for (name, uri) in requests {
        let mut took = Vec::new();
        let mut bytes = 0;
        for _ in 0..args.rounds {
            let started = Instant::now();
            let response = app.clone().oneshot(Request::get(&uri).body(Body::empty())?).await?;
            if !response.status().is_success() {
                bail!("{uri} answered {}", response.status());
            }
            bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await?.len();
            took.push(started.elapsed());
        }
        took.sort();
        let (median, slowest) = (took[took.len() / 2], took[took.len() - 1]);
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        if args.json {
            let line = serde_json::json!({"peer": "weir", "scenario": "console", "request": name, "topics": args.topics,
                "partitions": partitions, "median_ms": ms(median), "max_ms": ms(slowest), "bytes": bytes});
            println!("{line}");
        } else {
            println!("  {name:<12} median {:>8.1} ms   slowest {:>8.1} ms   {bytes} bytes", ms(median), ms(slowest));
        }
    }
    let rss = rss_bytes().unwrap_or(0);
    if args.json {
        println!("{}", serde_json::json!({"peer": "weir", "scenario": "console", "rss_bytes": rss}));
    } else {
        println!("  resident memory {:.0} MiB", rss as f64 / (1024.0 * 1024.0));
    }
    broker.shutdown();
    Ok(())
}
