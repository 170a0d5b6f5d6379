//! Dead letters: every dead-letter topic (`<topic>.dlq`) with its failed records, each with the error, attempts and
//! where it came from, and replaying one, a filtered set or all of them to where they came from.
//!
//! A log cannot lose a record, so a letter "leaves the DLQ" by being recorded as replayed: every replay appends
//! `{dlq, partition, offset, to}` to a kept topic of its own ([`DeadLetterFormat::replays_topic`]), which
//! `weir dlq replay` reads too, so neither sends a letter the other already sent. Letters below the committed offsets
//! of `weir dlq replay`'s group were replayed by it. Replaying sends the copy, then records it: a crash in between
//! can send a letter twice, never lose one.
//!
//! The console sits below the runtime that writes dead letters, so the binary tells it their header names.

use std::collections::{HashMap, HashSet};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use weir_broker::ProduceRecord;

use crate::messages::record_json;
use crate::{bad, ApiError, Console, Platform, PlatformError};

/// How the runtime writes dead letters and records replays (from `weir_runtime::handler`, given by the binary).
#[derive(Clone, Debug, Default)]
pub struct DeadLetterFormat {
    /// A dead-letter topic's name is its origin's with this suffix (`.dlq`).
    pub suffix: String,
    pub topic_header: String,
    pub partition_header: String,
    pub offset_header: String,
    pub error_header: String,
    pub attempts_header: String,
    pub first_failure_header: String,
    /// Headers starting with this describe the dead letter itself: a replayed copy leaves them behind.
    pub header_prefix: String,
    /// The header a replayed copy carries: `<dlq>/<partition>/<offset>` it was replayed from.
    pub replayed_from_header: String,
    /// The kept topic every replay is recorded in.
    pub replays_topic: String,
    /// The group `weir dlq replay` commits under.
    pub replay_group: String,
}

/// The replays recorded so far, read from the replays topic as it grows.
#[derive(Debug, Default)]
pub(crate) struct Replays {
    state: tokio::sync::Mutex<ReplayState>,
}

#[derive(Debug, Default)]
struct ReplayState {
    /// The replays topic's next offset to read.
    next: i64,
    /// Per dead-letter topic, the (partition, offset) of every letter replayed.
    done: HashMap<String, HashSet<(i32, i64)>>,
}

impl Replays {
    /// Reads what was recorded since the last call; the set of letters of `dlq` replayed.
    async fn of(
        &self,
        platform: &dyn Platform,
        format: &DeadLetterFormat,
        dlq: &str,
    ) -> Result<HashSet<(i32, i64)>, PlatformError> {
        let mut state = self.state.lock().await;
        match platform.offsets(&format.replays_topic, 0).await {
            Ok((_, end)) => {
                while state.next < end {
                    let from = state.next;
                    let records = platform.read(&format.replays_topic, 0, from, end, 10_000).await?;
                    let Some(last) = records.last().map(|r| r.offset) else { break };
                    for r in &records {
                        let Some(v) = r.value.as_deref().and_then(|v| serde_json::from_slice::<Value>(v).ok()) else {
                            continue;
                        };
                        if let (Some(d), Some(p), Some(o)) =
                            (v["dlq"].as_str(), v["partition"].as_i64(), v["offset"].as_i64())
                        {
                            state.done.entry(d.to_string()).or_default().insert((p as i32, o));
                        }
                    }
                    state.next = last + 1;
                }
            }
            // Nothing replayed yet.
            Err(PlatformError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        Ok(state.done.get(dlq).cloned().unwrap_or_default())
    }
}

/// Where a DLQ stands: the letters replayed (recorded, or below `weir dlq replay`'s committed offsets).
struct Standing {
    replayed: HashSet<(i32, i64)>,
    committed: HashMap<i32, i64>,
}

impl Standing {
    async fn read(c: &Console, dlq: &str) -> Result<Standing, ApiError> {
        let replayed = c.replays.of(&*c.platform, &c.info.dead_letters, dlq).await?;
        let mut committed = HashMap::new();
        if let Ok(g) = c.platform.describe_group(&c.info.dead_letters.replay_group).await {
            for o in g.offsets.iter().filter(|o| o.topic == dlq) {
                if let Some(at) = o.committed {
                    committed.insert(o.partition, at);
                }
            }
        }
        Ok(Standing { replayed, committed })
    }

    fn is_replayed(&self, partition: i32, offset: i64) -> bool {
        self.committed.get(&partition).is_some_and(|c| offset < *c) || self.replayed.contains(&(partition, offset))
    }
}

async fn dead_letter_topics(c: &Console) -> Result<Vec<String>, ApiError> {
    let suffix = &c.info.dead_letters.suffix;
    let topics = c.platform.list_topics().await?;
    Ok(topics.into_iter().filter(|t| !suffix.is_empty() && t.ends_with(suffix.as_str())).collect())
}

/// `GET /console/api/dead-letters?q=&offset=&limit=`: the dead-letter topics (paged as the topics are), each with
/// its letters, those waiting and those replayed.
pub(crate) async fn list(State(c): State<Console>, q: crate::PageQuery) -> Response {
    let names = match dead_letter_topics(&c).await {
        Ok(names) => names,
        Err(e) => return e.into_response(),
    };
    crate::paged(q, names, |dlq| {
        let c = c.clone();
        async move {
            let d = c.platform.describe_topic(&dlq).await.ok()?;
            let standing = Standing::read(&c, &dlq).await.ok()?;
            let mut letters = 0i64;
            let mut replayed = 0i64;
            for p in &d.partitions {
                letters += p.log_end_offset - p.log_start_offset;
                let below =
                    standing.committed.get(&p.partition).map_or(p.log_start_offset, |c| (*c).max(p.log_start_offset));
                replayed += below.min(p.log_end_offset) - p.log_start_offset;
                replayed += standing
                    .replayed
                    .iter()
                    .filter(|(q, o)| *q == p.partition && *o >= below && *o < p.log_end_offset)
                    .count() as i64;
            }
            let origin = dlq.strip_suffix(c.info.dead_letters.suffix.as_str()).unwrap_or(&dlq);
            Some(json!({"topic": dlq, "origin": origin, "letters": letters, "replayed": replayed,
            "waiting": letters - replayed}))
        }
    })
    .await
}

#[derive(Debug, Deserialize)]
pub(crate) struct Filter {
    /// Letters whose error, key or value contains this (case-insensitive).
    q: Option<String>,
    /// `waiting` (the default), `replayed` or `all`.
    state: Option<String>,
    /// The most letters answered (newest first): 100 unless given, at most 500.
    limit: Option<usize>,
}

/// The most letters a listing or a filtered replay reads, newest first (shared out over the partitions).
const MAX_SCAN: usize = 100_000;

/// One letter as the page shows it: the record, and what the runtime wrote of its failure.
fn letter_json(c: &Console, partition: i32, r: &weir_log::StoredRecord, replayed: bool) -> Value {
    let f = &c.info.dead_letters;
    let header = |name: &str| -> Option<String> {
        r.headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value.as_deref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let number = |name: &str| header(name).and_then(|v| v.parse::<i64>().ok());
    let mut v = record_json(partition, r);
    v["error"] = json!(header(&f.error_header));
    v["attempts"] = json!(number(&f.attempts_header));
    v["first_failure_ms"] = json!(number(&f.first_failure_header));
    v["origin"] = json!({"topic": header(&f.topic_header), "partition": number(&f.partition_header),
        "offset": number(&f.offset_header)});
    v["replayed"] = json!(replayed);
    v
}

fn letter_matches(r: &weir_log::StoredRecord, error_header: &str, q: &str) -> bool {
    if q.is_empty() {
        return true;
    }
    let has = |b: Option<&[u8]>| b.is_some_and(|b| String::from_utf8_lossy(b).to_lowercase().contains(q));
    has(r.key.as_deref())
        || has(r.value.as_deref())
        || r.headers.iter().any(|h| h.key == error_header && has(h.value.as_deref()))
}

/// The letters of `dlq` in the chosen state matching `q`, newest first, scanning at most [`MAX_SCAN`]; with how
/// many were scanned.
async fn select(
    c: &Console,
    dlq: &str,
    q: &str,
    state: &str,
    standing: &Standing,
) -> Result<(Vec<(i32, weir_log::StoredRecord, bool)>, usize), ApiError> {
    let d = c.platform.describe_topic(dlq).await?;
    let share = MAX_SCAN.div_ceil(d.partitions.len().max(1));
    let mut out = Vec::new();
    let mut scanned = 0;
    for p in &d.partitions {
        let from = (p.log_end_offset - share as i64).max(p.log_start_offset);
        let records = c.platform.read(dlq, p.partition, from, p.log_end_offset, share).await?;
        scanned += records.len();
        for r in records {
            let replayed = standing.is_replayed(p.partition, r.offset);
            let wanted = match state {
                "waiting" => !replayed,
                "replayed" => replayed,
                _ => true,
            };
            if wanted && letter_matches(&r, &c.info.dead_letters.error_header, q) {
                out.push((p.partition, r, replayed));
            }
        }
    }
    out.sort_by_key(|(p, r, _)| std::cmp::Reverse((r.timestamp, *p, r.offset)));
    Ok((out, scanned))
}

/// The dead-letter topic a path names: 404 unless it exists and is one.
async fn dead_letter_topic(c: &Console, dlq: &str) -> Result<(), ApiError> {
    let suffix = &c.info.dead_letters.suffix;
    if suffix.is_empty() || !dlq.ends_with(suffix.as_str()) {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("{dlq:?} is not a dead-letter topic (*{suffix})")));
    }
    c.platform.describe_topic(dlq).await?;
    Ok(())
}

fn filter_of(
    q: Result<Query<Filter>, axum::extract::rejection::QueryRejection>,
) -> Result<(String, String, usize), ApiError> {
    let Query(f) = q.map_err(|e| bad(format!("bad query: {}", e.body_text())))?;
    let state = f.state.unwrap_or_else(|| "waiting".into());
    if !matches!(state.as_str(), "waiting" | "replayed" | "all") {
        return Err(bad(format!("state must be waiting, replayed or all, not {state:?}")));
    }
    let limit = f.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(bad("limit must be between 1 and 500".into()));
    }
    Ok((f.q.unwrap_or_default().to_lowercase(), state, limit))
}

/// `GET /console/api/dead-letters/{dlq}?q=&state=&limit=`: the letters, newest first.
pub(crate) async fn letters(
    State(c): State<Console>,
    Path(dlq): Path<String>,
    q: Result<Query<Filter>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let (q, state, limit) = filter_of(q)?;
    dead_letter_topic(&c, &dlq).await?;
    let standing = Standing::read(&c, &dlq).await?;
    let (found, scanned) = select(&c, &dlq, &q, &state, &standing).await?;
    let mut letters = Vec::new();
    for (p, r, replayed) in found.iter().take(limit) {
        let mut v = letter_json(&c, *p, r, *replayed);
        if let Some(schemas) = &c.info.schemas {
            crate::messages::decode_framed(&**schemas, r, &mut v).await;
        }
        letters.push(v);
    }
    Ok(Json(json!({"topic": dlq, "matched": found.len(), "scanned": scanned, "letters": letters})).into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct ReplayRequest {
    /// These letters; or, when absent, every waiting letter matching `q` (all of them without `q`).
    letters: Option<Vec<LetterId>>,
    #[serde(default)]
    q: String,
}

#[derive(Debug, Deserialize)]
struct LetterId {
    partition: i32,
    offset: i64,
}

/// `POST /console/api/dead-letters/{dlq}/replay`: sends the chosen letters, or every waiting one matching `q`, to
/// the topic each came from (its key, value and headers, without the dead letter's own headers, with where it was
/// replayed from), and records each as replayed. A letter already replayed is not sent again.
pub(crate) async fn replay(
    State(c): State<Console>,
    Path(dlq): Path<String>,
    body: Result<Json<ReplayRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body.map_err(|e| bad(format!("bad replay: {}", e.body_text())))?;
    dead_letter_topic(&c, &dlq).await?;
    let standing = Standing::read(&c, &dlq).await?;
    let chosen: Vec<(i32, weir_log::StoredRecord)> = match request.letters {
        None => {
            let (found, _) = select(&c, &dlq, &request.q.to_lowercase(), "waiting", &standing).await?;
            // Oldest first: replayed in the order they failed.
            found.into_iter().rev().map(|(p, r, _)| (p, r)).collect()
        }
        Some(ids) => {
            let mut out = Vec::new();
            for id in ids {
                if standing.is_replayed(id.partition, id.offset) {
                    continue;
                }
                let missing = || {
                    let at = format!("partition {} offset {}", id.partition, id.offset);
                    ApiError(StatusCode::NOT_FOUND, format!("no letter at {at} of {dlq}"))
                };
                let (start, end) = c.platform.offsets(&dlq, id.partition).await?;
                if id.offset < start || id.offset >= end {
                    return Err(missing());
                }
                let r = c
                    .platform
                    .read(&dlq, id.partition, id.offset, id.offset + 1, 1)
                    .await?
                    .into_iter()
                    .find(|r| r.offset == id.offset)
                    .ok_or_else(missing)?;
                out.push((id.partition, r));
            }
            out
        }
    };
    let f = &c.info.dead_letters;
    let origin_of_name = dlq.strip_suffix(f.suffix.as_str()).unwrap_or(&dlq).to_string();
    if !chosen.is_empty() {
        ensure_replays_topic(&*c.platform, &f.replays_topic).await?;
    }
    let mut sent: HashMap<String, usize> = HashMap::new();
    for (partition, r) in &chosen {
        let to = r
            .headers
            .iter()
            .find(|h| h.key == f.topic_header)
            .and_then(|h| h.value.as_deref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_else(|| origin_of_name.clone());
        let mut headers: Vec<(String, Bytes)> = r
            .headers
            .iter()
            .filter(|h| !h.key.starts_with(f.header_prefix.as_str()))
            .map(|h| (h.key.clone(), h.value.clone().unwrap_or_default()))
            .collect();
        let from = format!("{dlq}/{partition}/{}", r.offset);
        headers.push((f.replayed_from_header.clone(), Bytes::from(from.clone())));
        let copy = ProduceRecord {
            topic: to.clone(),
            partition: None,
            key: r.key.clone(),
            value: r.value.clone(),
            headers,
            timestamp: None,
        };
        c.platform.produce(copy).await?;
        let note = json!({"dlq": dlq, "partition": partition, "offset": r.offset, "to": to,
            "at_ms": crate::groups::now_ms(), "by": "console"});
        let record = ProduceRecord {
            topic: f.replays_topic.clone(),
            partition: Some(0),
            key: Some(Bytes::from(from)),
            value: Some(Bytes::from(note.to_string())),
            headers: Vec::new(),
            timestamp: None,
        };
        c.platform.produce(record).await?;
        *sent.entry(to).or_default() += 1;
    }
    Ok(Json(json!({"topic": dlq, "replayed": chosen.len(), "to": sent})).into_response())
}

/// The replays topic, created on the first replay: one partition, compacted (each key, a letter, is written once, so
/// nothing is ever removed), as the runtime keeps its own records.
async fn ensure_replays_topic(platform: &dyn Platform, name: &str) -> Result<(), ApiError> {
    let configs = [("cleanup.policy".to_string(), "compact".to_string())].into_iter().collect();
    match platform.create_topic(name, 1, configs).await {
        Ok(_) | Err(PlatformError::Exists(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;
    use crate::{router, ConsoleInfo};

    /// The runtime's names, as `weir up` passes them.
    fn format() -> DeadLetterFormat {
        DeadLetterFormat {
            suffix: ".dlq".into(),
            topic_header: "weir.dlq.topic".into(),
            partition_header: "weir.dlq.partition".into(),
            offset_header: "weir.dlq.offset".into(),
            error_header: "weir.dlq.error".into(),
            attempts_header: "weir.dlq.attempts".into(),
            first_failure_header: "weir.dlq.first_failure_ms".into(),
            header_prefix: "weir.dlq.".into(),
            replayed_from_header: "weir.dlq.replayed_from".into(),
            replays_topic: "__weir_dlq_replays".into(),
            replay_group: "weir-dlq-replay".into(),
        }
    }

    async fn call(app: &axum::Router, method: &str, uri: &str, body: Value) -> (StatusCode, Value) {
        let request = Request::builder().method(method).uri(uri).header("content-type", "application/json");
        let body = if body.is_null() { Body::empty() } else { Body::from(body.to_string()) };
        let response = app.clone().oneshot(request.body(body).unwrap()).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn letters_are_listed_and_replayed_once_each() {
        let dir = tempfile::tempdir().unwrap();
        let broker = weir_broker::testing::open_broker(dir.path().join("data"));
        broker.create_topic("orders", 1, BTreeMap::new()).unwrap();
        broker.create_topic("orders.dlq", 2, BTreeMap::new()).unwrap();
        let producer = broker.producer();
        for (i, error) in ["boom-a", "boom-b", "boom-c"].into_iter().enumerate() {
            let mut r = ProduceRecord::new("orders.dlq", format!("{{\"order\":{i}}}"));
            r.partition = Some(0);
            r.key = Some(Bytes::from(format!("k{i}")));
            r.headers = [
                ("weir.dlq.topic", "orders".to_string()),
                ("weir.dlq.partition", "0".into()),
                ("weir.dlq.offset", (10 + i).to_string()),
                ("weir.dlq.error", error.into()),
                ("weir.dlq.attempts", "5".into()),
                ("weir.dlq.first_failure_ms", "1700000000000".into()),
                ("trace", "t1".into()),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), Bytes::from(v.clone())))
            .collect();
            producer.send(r).await.unwrap();
        }
        let info = ConsoleInfo { dead_letters: format(), ..Default::default() };
        let app = router(Arc::new(crate::Embedded(broker.clone())), info);

        let (_, topics) = call(&app, "GET", "/console/api/dead-letters", Value::Null).await;
        assert_eq!(topics["total"], 1, "{topics}");
        let t = &topics["items"][0];
        assert_eq!(
            (&t["topic"], &t["origin"], &t["waiting"], &t["replayed"]),
            (&json!("orders.dlq"), &json!("orders"), &json!(3), &json!(0))
        );
        let (_, letters) = call(&app, "GET", "/console/api/dead-letters/orders.dlq", Value::Null).await;
        assert_eq!(letters["matched"], 3);
        let newest = &letters["letters"][0];
        assert_eq!(
            (&newest["error"], &newest["attempts"], &newest["origin"]["offset"]),
            (&json!("boom-c"), &json!(5), &json!(12))
        );
        assert_eq!(newest["value_json"], json!({"order": 2}));

        // One letter: sent back to orders without the dead letter's headers, with where it came from.
        let one = json!({"letters": [{"partition": 0, "offset": 1}]});
        let (status, answer) = call(&app, "POST", "/console/api/dead-letters/orders.dlq/replay", one.clone()).await;
        assert_eq!((status, &answer["replayed"], &answer["to"]["orders"]), (StatusCode::OK, &json!(1), &json!(1)));
        let copy = broker.read("orders", 0, 0, 1 << 20).unwrap().records(0).unwrap().remove(0);
        assert_eq!((copy.key.as_deref(), copy.value.as_deref()), (Some(&b"k1"[..]), Some(&b"{\"order\":1}"[..])));
        let headers: Vec<(&str, String)> = copy
            .headers
            .iter()
            .map(|h| (h.key.as_str(), String::from_utf8_lossy(h.value.as_deref().unwrap_or_default()).into_owned()))
            .collect();
        assert_eq!(headers, [("trace", "t1".to_string()), ("weir.dlq.replayed_from", "orders.dlq/0/1".to_string())]);
        // Once only, and it has left the waiting letters.
        let (_, again) = call(&app, "POST", "/console/api/dead-letters/orders.dlq/replay", one).await;
        assert_eq!(again["replayed"], 0);
        let (_, waiting) = call(&app, "GET", "/console/api/dead-letters/orders.dlq?state=waiting", Value::Null).await;
        let offsets: Vec<i64> =
            waiting["letters"].as_array().unwrap().iter().map(|l| l["offset"].as_i64().unwrap()).collect();
        assert_eq!(offsets, [2, 0]);
        let (_, replayed) = call(&app, "GET", "/console/api/dead-letters/orders.dlq?state=replayed", Value::Null).await;
        assert_eq!((replayed["matched"].as_i64(), replayed["letters"][0]["replayed"].as_bool()), (Some(1), Some(true)));

        // A filtered set, then all the rest.
        let (_, filtered) =
            call(&app, "POST", "/console/api/dead-letters/orders.dlq/replay", json!({"q": "BOOM-C"})).await;
        assert_eq!(filtered["replayed"], 1);
        let (_, rest) = call(&app, "POST", "/console/api/dead-letters/orders.dlq/replay", json!({})).await;
        assert_eq!(rest["replayed"], 1);
        let (_, topics) = call(&app, "GET", "/console/api/dead-letters", Value::Null).await;
        assert_eq!((&topics["items"][0]["waiting"], &topics["items"][0]["replayed"]), (&json!(0), &json!(3)));
        let (start, end) = broker.offsets("orders", 0).unwrap();
        assert_eq!(end - start, 3, "each letter sent back once");
        // What `weir dlq replay` reads to skip them: one record a letter.
        assert_eq!(broker.offsets("__weir_dlq_replays", 0).unwrap().1, 3);

        for (method, uri, body, status) in [
            ("GET", "/console/api/dead-letters/orders", Value::Null, StatusCode::NOT_FOUND),
            ("GET", "/console/api/dead-letters/none.dlq", Value::Null, StatusCode::NOT_FOUND),
            ("GET", "/console/api/dead-letters/orders.dlq?state=gone", Value::Null, StatusCode::BAD_REQUEST),
            ("GET", "/console/api/dead-letters/orders.dlq?limit=0", Value::Null, StatusCode::BAD_REQUEST),
            (
                "POST",
                "/console/api/dead-letters/orders.dlq/replay",
                json!({"letters": [{"partition": 0, "offset": 99}]}),
                StatusCode::NOT_FOUND,
            ),
            ("POST", "/console/api/dead-letters/orders.dlq/replay", json!({"letters": "all"}), StatusCode::BAD_REQUEST),
            ("POST", "/console/api/dead-letters/orders/replay", json!({}), StatusCode::NOT_FOUND),
        ] {
            let (got, body) = call(&app, method, uri, body).await;
            assert_eq!(got, status, "{method} {uri}: {body}");
        }
        broker.shutdown();
    }
}
