//! A topic's page: its partitions and settings, its messages (browsed by partition from an offset, a time, the
//! start or the end, oldest or newest first), producing one, and searching them by key, header or value (a JSON
//! path into it), bounded in records scanned, with progress as Server-Sent Events.

use std::convert::Infallible;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::Stream;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use weir_broker::ProduceRecord;

use crate::{bad, ApiError, Console};

/// Bytes as text when they are UTF-8, else as hex, with which it is.
fn shown(bytes: Option<&[u8]>) -> (Value, &'static str) {
    match bytes {
        None => (Value::Null, "null"),
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => (Value::String(s.to_string()), "text"),
            Err(_) => (Value::String(b.iter().map(|x| format!("{x:02x}")).collect()), "hex"),
        },
    }
}

/// One stored record as the page shows it (and copies it).
pub(crate) fn record_json(partition: i32, r: &weir_log::StoredRecord) -> Value {
    let (key, key_encoding) = shown(r.key.as_deref());
    let (value, value_encoding) = shown(r.value.as_deref());
    let value_json = r.value.as_deref().and_then(|v| serde_json::from_slice::<Value>(v).ok());
    let headers: Vec<Value> =
        r.headers.iter().map(|h| json!({"key": h.key, "value": shown(h.value.as_deref()).0})).collect();
    json!({
        "partition": partition,
        "offset": r.offset,
        "timestamp": r.timestamp,
        "key": key,
        "key_encoding": key_encoding,
        "headers": headers,
        "value": value,
        "value_encoding": value_encoding,
        "value_json": value_json,
        "size": r.value.as_ref().map_or(0, |v| v.len()),
    })
}

/// A key or value framed with a schema id (a zero byte, then the id) decoded through the registry: `key_schema`
/// or `value_schema` (`{"id", "type"}`, or `{"error"}` when it does not decode) and `key_decoded`/`value_decoded`.
pub(crate) async fn decode_framed(schemas: &dyn crate::Schemas, r: &weir_log::StoredRecord, v: &mut Value) {
    for (side, bytes) in [("key", r.key.as_deref()), ("value", r.value.as_deref())] {
        let Some(bytes) = bytes.filter(|b| b.len() >= 5 && b[0] == 0) else { continue };
        match schemas.decode(bytes).await {
            Ok((id, kind, decoded)) => {
                v[format!("{side}_schema")] = json!({"id": id, "type": kind});
                v[format!("{side}_decoded")] = decoded;
            }
            Err(e) => v[format!("{side}_schema")] = json!({"error": e}),
        }
    }
}

/// `GET /console/api/topics/{topic}`: partitions with their offsets and sizes, the effective settings, and the
/// groups with committed offsets on it.
pub(crate) async fn topic(State(c): State<Console>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let d = c.platform.describe_topic(&name).await?;
    let partitions: Vec<Value> = d
        .partitions
        .iter()
        .map(|p| {
            json!({"partition": p.partition, "start_offset": p.log_start_offset, "end_offset": p.log_end_offset,
                   "size_bytes": p.size_bytes, "offline": p.offline})
        })
        .collect();
    let mut consumers: Vec<Value> = Vec::new();
    for g in c.platform.list_groups().await? {
        let Ok(g) = c.platform.describe_group(&g).await else { continue };
        if g.offsets.iter().any(|o| o.topic == name) {
            let lag: i64 = g.offsets.iter().filter(|o| o.topic == name).filter_map(|o| o.lag).sum();
            consumers.push(json!({"group": g.group, "state": g.state, "lag": lag}));
        }
    }
    Ok(Json(json!({"name": d.name, "partitions": partitions, "configs": d.configs, "consumers": consumers}))
        .into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct NewTopic {
    name: String,
    partitions: i32,
    /// Settings (`retention.ms`, `cleanup.policy`, ...); the broker refuses one it does not know.
    #[serde(default)]
    configs: std::collections::BTreeMap<String, String>,
}

/// `POST /console/api/topics`: creates a topic (201), 409 if it exists, 400 for a bad name, count or setting.
pub(crate) async fn create(
    State(c): State<Console>,
    body: Result<Json<NewTopic>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(t) = body.map_err(|e| bad(format!("bad topic: {}", e.body_text())))?;
    let partitions = c.platform.create_topic(&t.name, t.partitions, t.configs).await?;
    Ok((StatusCode::CREATED, Json(json!({"name": t.name, "partitions": partitions}))).into_response())
}

/// `DELETE /console/api/topics/{topic}`: the topic, its data and its groups' offsets.
pub(crate) async fn delete(State(c): State<Console>, Path(name): Path<String>) -> Result<Response, ApiError> {
    c.platform.delete_topic(&name).await?;
    Ok(Json(json!({"deleted": name})).into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct Browse {
    /// One partition, or all when absent.
    partition: Option<i32>,
    /// `latest` (the default), `earliest`, `offset` or `timestamp`.
    from: Option<String>,
    offset: Option<i64>,
    /// Milliseconds since the epoch.
    timestamp: Option<i64>,
    /// `newest` (the default with `latest`) or `oldest`.
    order: Option<String>,
    limit: Option<usize>,
}

/// `GET /console/api/topics/{topic}/messages`: up to `limit` records, from one partition or shared out over all of
/// them (each reads its share, at least one), merged by time: the page stays small at thousands of partitions.
pub(crate) async fn messages(
    State(c): State<Console>,
    Path(name): Path<String>,
    q: Result<Query<Browse>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(b) = match q {
        Ok(q) => q,
        Err(e) => return Err(bad(format!("bad query: {}", e.body_text()))),
    };
    let limit = b.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(bad("limit must be between 1 and 500".into()));
    }
    let from = b.from.as_deref().unwrap_or("latest");
    if !matches!(from, "latest" | "earliest" | "offset" | "timestamp") {
        return Err(bad(format!("from must be latest, earliest, offset or timestamp, not {from:?}")));
    }
    let newest_first = match b.order.as_deref() {
        None => from == "latest",
        Some("newest") => true,
        Some("oldest") => false,
        Some(other) => return Err(bad(format!("order must be newest or oldest, not {other:?}"))),
    };
    let d = c.platform.describe_topic(&name).await?;
    let chosen: Vec<_> = d.partitions.iter().filter(|p| b.partition.is_none_or(|q| q == p.partition)).collect();
    if chosen.is_empty() {
        let partition = b.partition.unwrap_or(-1);
        return Err(ApiError(StatusCode::NOT_FOUND, format!("topic {name:?} has no partition {partition}")));
    }
    let share = limit.div_ceil(chosen.len()).max(1);
    let mut read = Vec::new();
    for p in chosen {
        let (start, end) = (p.log_start_offset, p.log_end_offset);
        let first = match from {
            "earliest" => start,
            "latest" => (end - share as i64).max(start),
            "offset" => b.offset.ok_or_else(|| bad("from=offset needs offset=N".into()))?.clamp(start, end),
            _ => {
                let ts = b.timestamp.ok_or_else(|| bad("from=timestamp needs timestamp=MS".into()))?;
                c.platform.offset_for_timestamp(&name, p.partition, ts).await?.unwrap_or(end)
            }
        };
        let records = c.platform.read(&name, p.partition, first, end, share).await?;
        read.extend(records.into_iter().map(|r| (p.partition, r)));
    }
    let mut records = Vec::with_capacity(read.len());
    for (p, r) in &read {
        let mut v = record_json(*p, r);
        if let Some(schemas) = &c.info.schemas {
            decode_framed(&**schemas, r, &mut v).await;
        }
        records.push(v);
    }
    records.sort_by_key(|r| (r["timestamp"].as_i64(), r["partition"].as_i64(), r["offset"].as_i64()));
    if newest_first {
        records.reverse();
    }
    records.truncate(limit);
    Ok(Json(json!({"records": records})).into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct Produce {
    key: Option<String>,
    value: Option<String>,
    /// Encode the value (JSON in the schema type's form) with this subject's latest schema, framed with its id.
    value_subject: Option<String>,
    #[serde(default)]
    headers: Vec<HeaderIn>,
    partition: Option<i32>,
}

#[derive(Debug, Deserialize)]
struct HeaderIn {
    key: String,
    value: String,
}

/// `POST /console/api/topics/{topic}/messages`: one record, as typed in the page.
pub(crate) async fn produce(
    State(c): State<Console>,
    Path(name): Path<String>,
    body: Result<Json<Produce>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(p) = match body {
        Ok(b) => b,
        Err(e) => return Err(bad(format!("bad message: {}", e.body_text()))),
    };
    c.platform.describe_topic(&name).await?;
    let mut schema_id = None;
    let value: Option<bytes::Bytes> = match (&p.value_subject, p.value) {
        (None, value) => value.map(Into::into),
        (Some(subject), value) => {
            let Some(schemas) = &c.info.schemas else {
                return Err(bad("this weir runs without a schema registry: produce the value as it is".into()));
            };
            let text = value.unwrap_or_default();
            let json: Value = serde_json::from_str(&text)
                .map_err(|e| bad(format!("with a schema, the value must be JSON in its type's form: {e}")))?;
            let (id, framed) = schemas
                .encode(subject, &json)
                .await
                .map_err(|e| bad(format!("cannot encode the value with {subject:?}'s latest schema: {e}")))?;
            schema_id = Some(id);
            Some(framed.into())
        }
    };
    let record = ProduceRecord {
        topic: name,
        partition: p.partition,
        key: p.key.map(Into::into),
        value,
        headers: p.headers.into_iter().map(|h| (h.key, h.value.into())).collect(),
        timestamp: None,
    };
    let (partition, offset, timestamp) = c.platform.produce(record).await?;
    Ok(Json(json!({"partition": partition, "offset": offset, "timestamp": timestamp, "schema_id": schema_id}))
        .into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct Search {
    /// Text to find (case-sensitive).
    q: String,
    /// `value` (the default), `key` or `header`.
    #[serde(rename = "in")]
    field: Option<String>,
    /// A path into a JSON value (`$.order.id`, `items[0].sku`): only what is there is compared.
    path: Option<String>,
    /// The most records scanned (the newest of each partition, shared out): 10,000 unless given, at most 1,000,000.
    max: Option<usize>,
}

/// The value at a simple JSON path: `$`, `.name`, `[index]`.
fn at_path<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    let mut v = value;
    let path = path.trim().trim_start_matches('$');
    for part in path.split('.').filter(|s| !s.is_empty()) {
        let (name, rest) = part.split_once('[').map_or((part, ""), |(n, r)| (n, r));
        if !name.is_empty() {
            v = v.get(name)?;
        }
        for index in rest.split('[').filter(|s| !s.is_empty()) {
            v = v.get(index.trim_end_matches(']').parse::<usize>().ok()?)?;
        }
    }
    Some(v)
}

fn matches(r: &weir_log::StoredRecord, q: &str, field: &str, path: Option<&str>) -> bool {
    let contains = |b: Option<&[u8]>| b.is_some_and(|b| String::from_utf8_lossy(b).contains(q));
    match field {
        "key" => contains(r.key.as_deref()),
        "header" => r.headers.iter().any(|h| h.key.contains(q) || contains(h.value.as_deref())),
        _ => match path {
            None => contains(r.value.as_deref()),
            Some(path) => r
                .value
                .as_deref()
                .and_then(|v| serde_json::from_slice::<Value>(v).ok())
                .and_then(|v| {
                    at_path(&v, path).map(|found| match found {
                        Value::String(s) => s.contains(q),
                        other => other.to_string().contains(q),
                    })
                })
                .unwrap_or(false),
        },
    }
}

/// `GET /console/api/topics/{topic}/search`: Server-Sent Events, `match` for each record found (at most 100),
/// `progress` as records are scanned, `done` at the end (or `error`).
pub(crate) async fn search(
    State(c): State<Console>,
    Path(name): Path<String>,
    q: Result<Query<Search>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(s) = match q {
        Ok(q) => q,
        Err(e) => return Err(bad(format!("bad query: {}", e.body_text()))),
    };
    let field = s.field.clone().unwrap_or_else(|| "value".into());
    if !matches!(field.as_str(), "value" | "key" | "header") {
        return Err(bad(format!("in must be value, key or header, not {field:?}")));
    }
    let max = s.max.unwrap_or(10_000);
    if !(1..=1_000_000).contains(&max) {
        return Err(bad("max must be between 1 and 1000000".into()));
    }
    let d = c.platform.describe_topic(&name).await?;
    let (tx, rx) = mpsc::channel::<Event>(64);
    let platform = c.platform.clone();
    let share = max.div_ceil(d.partitions.len().max(1)) as i64;
    let ranges: Vec<(i32, i64, i64)> = d
        .partitions
        .iter()
        .map(|p| (p.partition, (p.log_end_offset - share).max(p.log_start_offset), p.log_end_offset))
        .collect();
    let to_scan: i64 = ranges.iter().map(|(_, from, to)| to - from).sum();
    tokio::spawn(async move {
        let send = |e: Event| {
            let tx = tx.clone();
            async move { tx.send(e).await.is_ok() }
        };
        let (mut scanned, mut found) = (0i64, 0usize);
        for (p, from, to) in ranges {
            let mut at = from;
            while at < to {
                let records = match platform.read(&name, p, at, to, 1000).await {
                    Ok(r) if !r.is_empty() => r,
                    Ok(_) => break,
                    Err(e) => {
                        let message = json!({"message": e.to_string()}).to_string();
                        let _ = send(Event::default().event("error").data(message)).await;
                        return;
                    }
                };
                at = records.last().map_or(to, |r| r.offset + 1);
                for r in &records {
                    if found < 100 && matches(r, &s.q, &field, s.path.as_deref()) {
                        found += 1;
                        if !send(Event::default().event("match").data(record_json(p, r).to_string())).await {
                            return; // the page went away
                        }
                    }
                }
                scanned += records.len() as i64;
                let progress = json!({"scanned": scanned, "to_scan": to_scan, "found": found});
                if !send(Event::default().event("progress").data(progress.to_string())).await {
                    return;
                }
            }
        }
        let done = json!({"scanned": scanned, "found": found}).to_string();
        let _ = send(Event::default().event("done").data(done)).await;
    });
    let stream: std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>> =
        Box::pin(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) }));
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn json_paths_reach_into_values() {
        let v = json!({"order": {"id": "A-1", "items": [{"sku": "x"}, {"sku": "y"}]}, "n": 3});
        assert_eq!(super::at_path(&v, "$.order.id"), Some(&json!("A-1")));
        assert_eq!(super::at_path(&v, "order.items[1].sku"), Some(&json!("y")));
        assert_eq!(super::at_path(&v, "$.n"), Some(&json!(3)));
        assert_eq!(super::at_path(&v, "$.missing"), None);
        assert_eq!(super::at_path(&v, "$"), Some(&v));
    }
}
