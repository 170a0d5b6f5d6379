//! weir's web console, served by `weir up` on its HTTP port at `/` beside the API (behind the same authentication).
//! It begins with the platform's own pages: an overview (throughput in and out, live; topics, partitions, storage,
//! groups and their lag, the systems, the bus, version and uptime), the topics (paged, filtered) and the consumer
//! groups with their lag.
//!
//! - Server side: JSON under `/console/api/`, and the live numbers as Server-Sent Events (`/console/api/live`: one
//!   snapshot a second, taken once for every open page and only while one is open: no polling storm).
//! - Client side: one page (`assets/index.html`), one script and one style sheet of our own, embedded in the binary
//!   at build time: no Node.js to build it, no CDN, it works offline. Hash routes (`#/topics`), light and dark themes
//!   (the system's, or chosen), times in the viewer's time zone.
//!
//! It reads and changes the platform through [`Platform`]: the embedded broker ([`Embedded`]), or the Kafka cluster
//! the systems run on (the binary's implementation).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::future::BoxFuture;
use futures_util::stream::Stream;
use serde::{Deserialize, Serialize};
use serde_json::json;

mod dead_letters;
mod groups;
mod messages;
mod platform;

pub use dead_letters::DeadLetterFormat;
pub use platform::{Embedded, Platform, PlatformError, Written};

/// What the overview says of this process besides the broker.
#[derive(Clone, Debug, Default)]
pub struct ConsoleInfo {
    pub version: String,
    /// The bus the systems use (`embedded`, or a cluster's URL with its secrets redacted).
    pub bus: String,
    /// The systems this process runs.
    pub systems: Vec<String>,
    /// How the runtime writes dead letters.
    pub dead_letters: DeadLetterFormat,
    /// The schema registry, when this weir runs one: values framed with a schema id are shown decoded, and a
    /// message may be produced with a subject's latest schema. Its own API is served under
    /// `/console/api/registry/` by the binary (the Schemas page reads it).
    pub schemas: Option<Arc<dyn Schemas>>,
    /// Whether each system's tasks are running (the runtime's host knows; the binary tells).
    pub health: Option<Arc<dyn SystemsHealth>>,
}

/// Each running system with its background tasks and whether each still runs.
pub trait SystemsHealth: Send + Sync + std::fmt::Debug {
    /// `(system, [(task, running)])`.
    fn systems(&self) -> Vec<(String, Vec<(String, bool)>)>;
}

/// The console's use of the schema registry (implemented by the binary over `weir-schema`, which sits beside this
/// crate).
pub trait Schemas: Send + Sync + std::fmt::Debug {
    /// Bytes framed with a schema id (the Confluent wire format) decoded to JSON: the id, the schema's type
    /// (`AVRO`, `JSON`, `PROTOBUF`) and the value. An error for bytes that are not framed or do not fit.
    fn decode<'a>(&'a self, bytes: &'a [u8]) -> BoxFuture<'a, Result<(i32, String, serde_json::Value), String>>;
    /// `value` (the schema type's JSON form) encoded with the latest schema of `subject` and framed: the id and
    /// the bytes.
    fn encode<'a>(
        &'a self,
        subject: &'a str,
        value: &'a serde_json::Value,
    ) -> BoxFuture<'a, Result<(i32, Vec<u8>), String>>;
}

#[derive(Clone, Debug)]
struct Console {
    platform: Arc<dyn Platform>,
    info: Arc<ConsoleInfo>,
    started: Instant,
    /// Each group's lag over the last hour, sampled by a task [`router`] starts.
    lag_history: Arc<groups::LagHistory>,
    /// The dead letters replayed, as recorded.
    replays: Arc<dead_letters::Replays>,
    /// The live snapshots, one a second while a page watches.
    snapshots: Arc<tokio::sync::watch::Sender<Option<Snapshot>>>,
}

/// The page at `/` and its scripts and style sheet: the same for everyone and holding no data, so `weir up` serves
/// them without credentials ([`ASSET_PATHS`]), and the page asks for a login itself when the API answers 401.
pub fn assets() -> Router {
    Router::new()
        .route("/", get(index))
        .route("/console/app.js", get(script))
        .route("/console/systems.js", get(systems_script))
        .route("/console/app.css", get(style))
}

/// The paths [`assets`] serves.
pub const ASSET_PATHS: [&str; 4] = ["/", "/console/app.js", "/console/systems.js", "/console/app.css"];

/// The console's API under `/console/api/`. Called within a Tokio runtime, it also starts sampling every group's lag
/// (for the groups' charts) and taking the live snapshots while a page watches, until the router is dropped.
pub fn router(platform: Arc<dyn Platform>, info: ConsoleInfo) -> Router {
    let lag_history = Arc::new(groups::LagHistory::default());
    let snapshots = Arc::new(tokio::sync::watch::Sender::new(None));
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(groups::keep_sampling(Arc::downgrade(&platform), lag_history.clone(), snapshots.clone()));
        runtime.spawn(keep_snapshotting(Arc::downgrade(&platform), snapshots.clone()));
    }
    Router::new()
        .route("/console/api/overview", get(overview))
        .route("/console/api/topics", get(topics).post(messages::create))
        .route("/console/api/topics/{topic}", get(messages::topic).delete(messages::delete))
        .route("/console/api/topics/{topic}/messages", get(messages::messages).post(messages::produce))
        .route("/console/api/topics/{topic}/search", get(messages::search))
        .route("/console/api/groups", get(groups))
        .route("/console/api/groups/{group}", get(groups::group))
        .route("/console/api/groups/{group}/reset", axum::routing::post(groups::reset))
        .route("/console/api/dead-letters", get(dead_letters::list))
        .route("/console/api/dead-letters/{topic}", get(dead_letters::letters))
        .route("/console/api/dead-letters/{topic}/replay", axum::routing::post(dead_letters::replay))
        .route("/console/api/live", get(live))
        .with_state(Console {
            platform,
            info: Arc::new(info),
            started: Instant::now(),
            lag_history,
            replays: Arc::default(),
            snapshots,
        })
}

const INDEX: &str = include_str!("../assets/index.html");
const SCRIPT: &str = include_str!("../assets/app.js");
const SYSTEMS_SCRIPT: &str = include_str!("../assets/systems.js");
const STYLE: &str = include_str!("../assets/app.css");

async fn index() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], INDEX).into_response()
}

async fn script() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], SCRIPT)
        .into_response()
}

async fn systems_script() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], SYSTEMS_SCRIPT)
        .into_response()
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], STYLE).into_response()
}

/// An error as the rest of weir's API answers it: the status, and `{"error_code", "message"}` (the code the status
/// and two digits, as the REST Proxy's).
#[derive(Debug)]
pub(crate) struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = u32::from(self.0.as_u16()) * 100;
        (self.0, Json(json!({"error_code": code, "message": self.1}))).into_response()
    }
}

impl From<PlatformError> for ApiError {
    fn from(e: PlatformError) -> Self {
        let status = match e {
            PlatformError::NotFound(_) => StatusCode::NOT_FOUND,
            PlatformError::Exists(_) | PlatformError::Conflict(_) => StatusCode::CONFLICT,
            PlatformError::Invalid(_) => StatusCode::BAD_REQUEST,
            PlatformError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(status, e.to_string())
    }
}

/// A client's mistake: 400.
pub(crate) fn bad(message: String) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message)
}

/// The platform's totals at one moment.
#[derive(Clone, Copy, Debug, Default, Serialize)]
struct Totals {
    topics: usize,
    partitions: usize,
    size_bytes: u64,
    /// Records in every partition's log (end minus start offsets).
    records: i64,
    /// Sum of every partition's end offset: it grows by the records written.
    end_offsets: i64,
    groups: usize,
    /// Sum of every group's committed offsets: it grows by the records consumed and committed.
    committed: i64,
    total_lag: i64,
}

/// The totals over every topic and group (those that went away meanwhile left out).
async fn totals(platform: &dyn Platform) -> Totals {
    totals_and_ends(platform).await.0
}

/// Each topic's end offsets, summed over its partitions: they grow by the records written to it.
type TopicEnds = std::collections::HashMap<String, i64>;

/// [`totals`], and each topic's end offsets (for its rate).
async fn totals_and_ends(platform: &dyn Platform) -> (Totals, TopicEnds) {
    let mut t = Totals::default();
    let mut ends = TopicEnds::new();
    for name in platform.list_topics().await.unwrap_or_default() {
        let Ok(d) = platform.describe_topic(&name).await else { continue };
        t.topics += 1;
        t.partitions += d.partitions.len();
        let mut end = 0;
        for p in &d.partitions {
            t.size_bytes += p.size_bytes;
            t.records += p.log_end_offset - p.log_start_offset;
            end += p.log_end_offset;
        }
        t.end_offsets += end;
        ends.insert(name, end);
    }
    for g in platform.list_groups().await.unwrap_or_default() {
        let Ok(d) = platform.describe_group(&g).await else { continue };
        t.groups += 1;
        for o in &d.offsets {
            t.committed += o.committed.unwrap_or(0);
            t.total_lag += o.lag.unwrap_or(0);
        }
    }
    (t, ends)
}

/// `GET /console/api/overview`.
async fn overview(State(c): State<Console>) -> Json<serde_json::Value> {
    let t = totals(&*c.platform).await;
    Json(json!({
        "version": c.info.version,
        "bus": c.info.bus,
        "systems": c.info.systems,
        "uptime_seconds": c.started.elapsed().as_secs(),
        "data_dir": c.platform.data_dir(),
        "registry": c.info.schemas.is_some(),
        "health": systems_health(&c.info),
        "totals": t,
    }))
}

/// Each system's health: healthy while every one of its tasks runs (a system without tasks, serving only HTTP,
/// is healthy while the process is up); the tasks that stopped, by name.
fn systems_health(info: &ConsoleInfo) -> Vec<serde_json::Value> {
    let tasks = info.health.as_ref().map(|h| h.systems()).unwrap_or_default();
    info.systems
        .iter()
        .map(|name| {
            let mine: Vec<&(String, bool)> =
                tasks.iter().filter(|(s, _)| s == name).flat_map(|(_, t)| t.iter()).collect();
            let stopped: Vec<&str> = mine.iter().filter(|(_, running)| !running).map(|(t, _)| t.as_str()).collect();
            json!({"system": name, "healthy": stopped.is_empty(), "tasks": mine.len(), "stopped": stopped})
        })
        .collect()
}

#[derive(Debug, Deserialize)]
struct Page {
    /// Names containing this (case-insensitive).
    q: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
}

/// A page of at most this many rows: lists stay light at a thousand topics.
const MAX_PAGE: usize = 500;

fn page(q: PageQuery) -> Result<(String, usize, usize), ApiError> {
    let Query(p) = q.map_err(|e| bad(format!("bad query: {}", e.body_text())))?;
    let limit = p.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(bad(format!("limit must be between 1 and {MAX_PAGE}")));
    }
    Ok((p.q.unwrap_or_default().to_lowercase(), p.offset.unwrap_or(0), limit))
}

type PageQuery = Result<Query<Page>, axum::extract::rejection::QueryRejection>;

/// A page of the `names` containing the query's filter, in order, each described by `describe` (skipped if it went
/// away meanwhile).
pub(crate) async fn paged<F, Fut>(q: PageQuery, mut names: Vec<String>, describe: F) -> Response
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Option<serde_json::Value>>,
{
    let (filter, offset, limit) = match page(q) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    names.retain(|n| n.to_lowercase().contains(&filter));
    names.sort();
    let mut items = Vec::new();
    for n in names.iter().skip(offset).take(limit) {
        if let Some(item) = describe(n.clone()).await {
            items.push(item);
        }
    }
    Json(json!({"total": names.len(), "offset": offset, "limit": limit, "items": items})).into_response()
}

/// `GET /console/api/topics?q=&offset=&limit=`: topics by name, with their partitions, sizes, offsets and records
/// written per second (null until the live snapshots have two readings).
async fn topics(State(c): State<Console>, q: PageQuery) -> Response {
    let names = match c.platform.list_topics().await {
        Ok(names) => names,
        Err(e) => return ApiError::from(e).into_response(),
    };
    // Each topic's rate from the latest live snapshot (taken while a page is open, as this one is).
    let rates = c.snapshots.borrow().as_ref().map(|s| s.topics.clone()).unwrap_or_default();
    paged(q, names, |n| {
        let (c, rates) = (c.clone(), rates.clone());
        async move {
            let d = c.platform.describe_topic(&n).await.ok()?;
            let per_s = rates.get(&n).map(|(_, r)| *r);
            let sum = |f: fn(&weir_broker::PartitionDescription) -> i64| d.partitions.iter().map(f).sum::<i64>();
            Some(json!({
                "name": d.name,
                "partitions": d.partitions.len(),
                "size_bytes": d.partitions.iter().map(|p| p.size_bytes).sum::<u64>(),
                "records": sum(|p| p.log_end_offset - p.log_start_offset),
                "end_offset": sum(|p| p.log_end_offset),
                "offline": d.partitions.iter().filter(|p| p.offline.is_some()).count(),
                "records_per_s": per_s,
            }))
        }
    })
    .await
}

/// `GET /console/api/groups?q=&offset=&limit=`: consumer groups with their state, members and lag.
async fn groups(State(c): State<Console>, q: PageQuery) -> Response {
    let names = match c.platform.list_groups().await {
        Ok(names) => names,
        Err(e) => return ApiError::from(e).into_response(),
    };
    paged(q, names, |g| {
        let c = c.clone();
        async move {
            let d = c.platform.describe_group(&g).await.ok()?;
            let mut topics: Vec<&str> = d.offsets.iter().map(|o| o.topic.as_str()).collect();
            topics.sort_unstable();
            topics.dedup();
            Some(json!({
                "group": d.group,
                "state": d.state,
                "members": d.members.len(),
                "topics": topics,
                "lag": d.offsets.iter().filter_map(|o| o.lag).sum::<i64>(),
            }))
        }
    })
    .await
}

/// How often `/console/api/live` sends a snapshot on the embedded broker (see [`Platform::snapshot_every`]).
const LIVE_EVERY: Duration = Duration::from_secs(1);

/// The platform's totals at one moment, with records in and out per second since the one before.
#[derive(Clone, Debug)]
pub(crate) struct Snapshot {
    at: Instant,
    totals: Totals,
    in_per_s: f64,
    out_per_s: f64,
    /// Each topic's end offsets, and records written to it per second since the snapshot before.
    topics: Arc<std::collections::HashMap<String, (i64, f64)>>,
}

/// Takes a snapshot a second (on a cluster, less often) while any page watches (`live`), one for all of them: describing every partition and
/// group costs the same whether one page or a hundred are open, and nothing while none is.
async fn keep_snapshotting(
    platform: std::sync::Weak<dyn Platform>,
    snapshots: Arc<tokio::sync::watch::Sender<Option<Snapshot>>>,
) {
    let mut previous: Option<Snapshot> = None;
    loop {
        let every = platform.upgrade().map_or(LIVE_EVERY, |p| p.snapshot_every());
        tokio::time::sleep(every).await;
        let Some(p) = platform.upgrade() else { return };
        if snapshots.receiver_count() == 0 {
            // Nobody watching: the next rate starts afresh.
            previous = None;
            continue;
        }
        let (totals, ends) = totals_and_ends(&*p).await;
        drop(p);
        let at = Instant::now();
        let secs = previous.as_ref().map_or(1.0, |p| at.duration_since(p.at).as_secs_f64().max(1e-3));
        let rate = |now: i64, then: Option<i64>| then.map_or(0.0, |then| (now - then).max(0) as f64 / secs);
        let (in_per_s, out_per_s) = match &previous {
            Some(p) => {
                (rate(totals.end_offsets, Some(p.totals.end_offsets)), rate(totals.committed, Some(p.totals.committed)))
            }
            None => (0.0, 0.0),
        };
        let topics = ends
            .into_iter()
            .map(|(name, end)| {
                let then = previous.as_ref().and_then(|p| p.topics.get(&name).map(|(e, _)| *e));
                let per_s = rate(end, then);
                (name, (end, per_s))
            })
            .collect();
        let snapshot = Snapshot { at, totals, in_per_s, out_per_s, topics: Arc::new(topics) };
        previous = Some(snapshot.clone());
        snapshots.send_replace(Some(snapshot));
    }
}

/// `GET /console/api/live`: a snapshot a second as Server-Sent Events (`event: totals`): the totals, and records
/// in and out per second since the previous one (out: committed by consumer groups). Every open page gets the same
/// snapshots ([`keep_snapshotting`]).
async fn live(State(c): State<Console>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = c.snapshots.subscribe();
    let stream = futures_util::stream::unfold((c, rx), |(c, mut rx)| async move {
        // The next snapshot (the first one taken after this page asked).
        rx.changed().await.ok()?;
        let snapshot = rx.borrow_and_update().clone()?;
        let data = json!({
            "totals": snapshot.totals,
            "in_per_s": snapshot.in_per_s,
            "out_per_s": snapshot.out_per_s,
            "uptime_seconds": c.started.elapsed().as_secs(),
        });
        let event = Event::default().event("totals").data(data.to_string());
        Some((Ok(event), (c, rx)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    async fn get_json(app: &Router, uri: &str) -> (StatusCode, serde_json::Value) {
        let response = app.clone().oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }

    #[tokio::test]
    async fn pages_and_lists_answer_from_the_broker() {
        let dir = tempfile::tempdir().unwrap();
        let broker = weir_broker::testing::open_broker(dir.path().join("data"));
        for i in 0..12 {
            broker.create_topic(&format!("t{i:02}"), 2, BTreeMap::new()).unwrap();
        }
        let p = broker.producer();
        for _ in 0..5 {
            p.send(weir_broker::ProduceRecord::new("t03", "x")).await.unwrap();
        }
        let info = ConsoleInfo { version: "9.9".into(), bus: "embedded".into(), ..Default::default() };
        let app = router(Arc::new(Embedded(broker.clone())), info).merge(assets());
        let response = app.clone().oneshot(Request::get("/").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let (_, overview) = get_json(&app, "/console/api/overview").await;
        assert_eq!((overview["version"].as_str(), overview["totals"]["topics"].as_u64()), (Some("9.9"), Some(12)));
        assert_eq!(
            (overview["totals"]["partitions"].as_u64(), overview["totals"]["records"].as_i64()),
            (Some(24), Some(5))
        );
        let (_, page) = get_json(&app, "/console/api/topics?offset=2&limit=3").await;
        assert_eq!(page["total"], 12);
        let names: Vec<&str> = page["items"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["t02", "t03", "t04"]);
        assert_eq!(page["items"][1]["records"], 5);
        let (_, filtered) = get_json(&app, "/console/api/topics?q=T1").await;
        assert_eq!(filtered["total"], 2);
        // A topic's page and its messages, and the answers to mistakes.
        let (_, t03) = get_json(&app, "/console/api/topics/t03").await;
        assert_eq!((t03["partitions"].as_array().unwrap().len(), t03["configs"].is_object()), (2, true));
        let (_, oldest) = get_json(&app, "/console/api/topics/t03/messages?from=earliest&order=oldest&limit=3").await;
        let offsets: Vec<i64> =
            oldest["records"].as_array().unwrap().iter().map(|r| r["offset"].as_i64().unwrap()).collect();
        assert!(offsets.len() <= 3 && offsets.iter().all(|o| *o <= 1), "two a partition at most: {oldest}");
        let (_, all) = get_json(&app, "/console/api/topics/t03/messages?limit=500").await;
        assert_eq!(all["records"].as_array().unwrap().len(), 5, "every record when the limit allows");
        let (_, one) = get_json(&app, "/console/api/topics/t03/messages?limit=1").await;
        assert_eq!(one["records"].as_array().unwrap().len(), 1, "never more than the limit");
        for (method, uri, body, status) in [
            ("GET", "/console/api/topics/nope", "", StatusCode::NOT_FOUND),
            ("GET", "/console/api/topics/t03/messages?from=yesterday", "", StatusCode::BAD_REQUEST),
            ("GET", "/console/api/topics/t03/messages?partition=7", "", StatusCode::NOT_FOUND),
            ("GET", "/console/api/topics/t03/search?q=x&in=body", "", StatusCode::BAD_REQUEST),
            ("POST", "/console/api/topics/nope/messages", r#"{"value":"x"}"#, StatusCode::NOT_FOUND),
            ("POST", "/console/api/topics", r#"{"name":"t03","partitions":1}"#, StatusCode::CONFLICT),
            ("POST", "/console/api/topics", r#"{"name":"no spaces","partitions":1}"#, StatusCode::BAD_REQUEST),
            (
                "POST",
                "/console/api/topics",
                r#"{"name":"ok","partitions":1,"configs":{"no.such":"1"}}"#,
                StatusCode::BAD_REQUEST,
            ),
            ("DELETE", "/console/api/topics/nope", "", StatusCode::NOT_FOUND),
            ("GET", "/console/api/groups/nope", "", StatusCode::NOT_FOUND),
            ("POST", "/console/api/groups/nope/reset", r#"{"to":"earliest"}"#, StatusCode::NOT_FOUND),
            ("POST", "/console/api/groups/nope/reset", r#"{"to":"sideways"}"#, StatusCode::BAD_REQUEST),
        ] {
            let request = Request::builder().method(method).uri(uri).header("content-type", "application/json");
            let response = app.clone().oneshot(request.body(Body::from(body)).unwrap()).await.unwrap();
            assert_eq!(response.status(), status, "{method} {uri}");
        }
        for bad in ["/console/api/topics?limit=0", "/console/api/topics?limit=501", "/console/api/groups?offset=-1"] {
            let (status, body) = get_json(&app, bad).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
            assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
        broker.shutdown();
    }

    /// Every open page gets the live snapshots, taken once a second for all of them.
    #[tokio::test]
    async fn live_snapshots_reach_every_page() {
        use futures_util::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        let broker = weir_broker::testing::open_broker(dir.path().join("data"));
        broker.create_topic("t", 3, BTreeMap::new()).unwrap();
        let app = router(Arc::new(Embedded(broker.clone())), ConsoleInfo::default());
        let mut pages = Vec::new();
        for _ in 0..2 {
            let response =
                app.clone().oneshot(Request::get("/console/api/live").body(Body::empty()).unwrap()).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            pages.push(response.into_body().into_data_stream());
        }
        for page in &mut pages {
            let first =
                tokio::time::timeout(Duration::from_secs(10), page.next()).await.expect("a snapshot within 10 s");
            let text = String::from_utf8(first.unwrap().unwrap().to_vec()).unwrap();
            assert!(text.starts_with("event: totals") && text.contains("\"partitions\":3"), "{text}");
        }
        broker.shutdown();
    }

    #[derive(Debug)]
    struct OneStopped;

    impl SystemsHealth for OneStopped {
        fn systems(&self) -> Vec<(String, Vec<(String, bool)>)> {
            vec![
                ("wedding".into(), vec![("wedding desks".into(), true)]),
                ("dispatch".into(), vec![("dispatch assigner".into(), false), ("dispatch relay".into(), true)]),
            ]
        }
    }

    /// The overview says which system is not doing all its work, and which of its tasks stopped.
    #[tokio::test]
    async fn the_overview_shows_each_systems_health() {
        let dir = tempfile::tempdir().unwrap();
        let broker = weir_broker::testing::open_broker(dir.path().join("data"));
        let info = ConsoleInfo {
            systems: vec!["wedding".into(), "dispatch".into(), "analytics".into()],
            health: Some(Arc::new(OneStopped)),
            ..Default::default()
        };
        let app = router(Arc::new(Embedded(broker.clone())), info);
        let (_, overview) = get_json(&app, "/console/api/overview").await;
        let health = &overview["health"];
        assert_eq!(health[0], serde_json::json!({"system": "wedding", "healthy": true, "tasks": 1, "stopped": []}));
        assert_eq!(
            health[1],
            serde_json::json!({"system": "dispatch", "healthy": false, "tasks": 2, "stopped": ["dispatch assigner"]})
        );
        assert_eq!(health[2]["healthy"], true, "a system without tasks is healthy while the process is up");
        broker.shutdown();
    }
}
