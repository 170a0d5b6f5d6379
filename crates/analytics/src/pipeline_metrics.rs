//! The pipeline's metrics under the origin's names (data-pipeline-zeal's `producer_*` and `processor_*`), beside the
//! seed document's (`events_produced_total`, `events_consumed_total`, `aggregation_windows_flushed_total`), so that
//! the origin's Grafana dashboard and alert rules work on weir unchanged; and a reader of Prometheus' text format for
//! `/api/metrics/...`, which serves them as JSON.

use std::collections::BTreeMap;

use serde::Serialize;

pub const EVENTS_PRODUCED: &str = "producer_events_total";
pub const PUBLISH_LATENCY: &str = "producer_publish_latency_seconds";
pub const PUBLISH_ERRORS: &str = "producer_publish_errors_total";
pub const EVENTS_CONSUMED: &str = "processor_events_consumed_total";
pub const CONSUME_ERRORS: &str = "processor_consume_errors_total";
pub const CONSUMER_LAG: &str = "processor_consumer_lag";
pub const BATCH_SIZE: &str = "processor_batch_size";
pub const PROCESSING_LATENCY: &str = "processor_processing_latency_seconds";
pub const DESERIALIZE_LATENCY: &str = "processor_deserialize_latency_seconds";
pub const WINDOWS_FLUSHED: &str = "processor_windows_flushed_total";
pub const ACTIVE_WINDOWS: &str = "processor_active_windows";
pub const EVENTS_IN_MEMORY: &str = "processor_events_in_memory_total";
pub const EVENTS_IN_MEMORY_BY_TYPE: &str = "processor_events_in_memory_by_type";
pub const SECONDS_UNTIL_FLUSH: &str = "processor_seconds_until_next_flush";
pub const EARLIEST_WINDOW_END: &str = "processor_earliest_window_end_timestamp";
pub const RECORDS_WRITTEN: &str = "processor_records_written_total";
pub const DB_WRITE_LATENCY: &str = "processor_db_write_latency_seconds";
pub const DB_WRITE_ERRORS: &str = "processor_db_write_errors_total";

/// `error_type` of an event that is not JSON of the expected shape (the origin's only kind), and of one whose
/// timestamp is not a time.
pub const DESERIALIZATION: &str = "deserialization";
pub const INVALID_TIMESTAMP: &str = "invalid_timestamp";

/// Describes every metric of the pipeline to the recorder (the `# HELP` lines), and gives the counters a first sample
/// of 0, so that a rule's `rate(...)` and the dashboard see them before anything happens.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!("events_produced_total", "Events the analytics producers sent");
    describe_counter!("events_consumed_total", "Events the aggregator added to windows");
    describe_counter!("aggregation_windows_flushed_total", "Window and type rows written by the aggregator's flushes");
    describe_counter!(EVENTS_PRODUCED, "Events the analytics producers sent, per event type");
    describe_histogram!(PUBLISH_LATENCY, Unit::Seconds, "Time for the bus to acknowledge one produce call");
    describe_counter!(PUBLISH_ERRORS, "Events a produce call failed to publish");
    describe_counter!(EVENTS_CONSUMED, "Valid events the aggregator read, per event type");
    describe_counter!(CONSUME_ERRORS, "Events the aggregator could not read, per error type");
    describe_gauge!(CONSUMER_LAG, "Events on the topic past the aggregator's flushed offset, per partition");
    describe_histogram!(BATCH_SIZE, "Events per batch the aggregator read");
    describe_histogram!(PROCESSING_LATENCY, Unit::Seconds, "Time to read and window one event (a batch's mean)");
    describe_histogram!(DESERIALIZE_LATENCY, Unit::Seconds, "Time to parse one event's JSON (a batch's mean)");
    describe_counter!(WINDOWS_FLUSHED, "Window and type rows written by the aggregator's flushes");
    describe_gauge!(ACTIVE_WINDOWS, "Window and type pairs holding events not yet flushed");
    describe_gauge!(EVENTS_IN_MEMORY, "Events held in memory, not yet flushed");
    describe_gauge!(EVENTS_IN_MEMORY_BY_TYPE, "Events held in memory, per event type");
    describe_gauge!(SECONDS_UNTIL_FLUSH, Unit::Seconds, "Time until the aggregator's next scheduled flush");
    describe_gauge!(EARLIEST_WINDOW_END, Unit::Seconds, "End of the earliest window in memory (Unix time; 0: none)");
    describe_counter!(RECORDS_WRITTEN, "Events the flushes added to hourly_aggregations");
    describe_histogram!(DB_WRITE_LATENCY, Unit::Seconds, "Time of one flush transaction");
    describe_counter!(DB_WRITE_ERRORS, "Flushes that failed");
    describe_counter!("late_events_total", "Events whose window the watermark had passed");
    describe_counter!("invalid_events_total", "Events that are not JSON events with a time");
    for name in [
        "events_produced_total",
        "events_consumed_total",
        "aggregation_windows_flushed_total",
        "late_events_total",
        "invalid_events_total",
    ] {
        metrics::counter!(name).increment(0);
    }
    for name in [PUBLISH_ERRORS, WINDOWS_FLUSHED, RECORDS_WRITTEN, DB_WRITE_ERRORS] {
        metrics::counter!(name).increment(0);
    }
    metrics::counter!(CONSUME_ERRORS, "error_type" => DESERIALIZATION).increment(0);
}

/// One metric family as the origin's `/api/metrics/{producer,processor}` shows it.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Family {
    pub name: String,
    pub help: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub values: Vec<Sample>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Reads Prometheus' text exposition format into families by name. A histogram's or summary's `_bucket`, `_sum` and
/// `_count` samples go under the family's own name, as the origin's client library groups them. Lines it cannot
/// read are skipped: the text comes from this process's own exporter.
pub fn parse(text: &str) -> BTreeMap<String, Family> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let family = |families: &mut BTreeMap<String, Family>, name: &str| -> String {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix).filter(|b| families.contains_key(*b)))
            .unwrap_or(name)
            .to_string();
        families.entry(base.clone()).or_insert_with(|| Family { name: base.clone(), ..Default::default() });
        base
    };
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ").or_else(|| line.strip_prefix("# TYPE ")) {
            let Some((name, what)) = rest.split_once(' ') else { continue };
            let f =
                families.entry(name.to_string()).or_insert_with(|| Family { name: name.into(), ..Default::default() });
            if line.starts_with("# HELP") {
                f.help = Some(what.replace("\\n", "\n").replace("\\\\", "\\"));
            } else {
                f.kind = Some(what.to_string());
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let Some((name, labels, rest)) = sample(line) else { continue };
        let Some(value) = rest.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()) else { continue };
        let base = family(&mut families, name);
        if let Some(f) = families.get_mut(&base) {
            f.values.push(Sample { labels, value });
        }
    }
    families
}

/// A sample line's name, labels and what follows them.
fn sample(line: &str) -> Option<(&str, BTreeMap<String, String>, &str)> {
    let name_end = line.find(['{', ' ']).unwrap_or(line.len());
    let name = &line[..name_end];
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        let mut key = String::new();
        loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => {
                    rest = &inner[i + 1..];
                    break;
                }
                ',' | ' ' => {}
                '=' => {
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            '"' => break,
                            other => value.push(other),
                        }
                    }
                    labels.insert(std::mem::take(&mut key), value);
                }
                other => key.push(other),
            }
        }
    }
    Some((name, labels, rest.trim_start()))
}

/// The sum of a family's samples whose labels include `matching` (all of them for none).
pub fn sum(families: &BTreeMap<String, Family>, name: &str, matching: &[(&str, &str)]) -> f64 {
    families.get(name).map_or(0.0, |f| {
        f.values
            .iter()
            .filter(|s| matching.iter().all(|(k, v)| s.labels.get(*k).is_some_and(|l| l == v)))
            .map(|s| s.value)
            .sum()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_what_the_exporter_writes() {
        let text = "# HELP producer_events_total Events sent\n# TYPE producer_events_total counter\n\
                    producer_events_total{event_type=\"click\"} 3\nproducer_events_total{event_type=\"a \\\"b\\\"\"} 4\n\
                    # TYPE processor_db_write_latency_seconds histogram\n\
                    processor_db_write_latency_seconds_bucket{le=\"0.5\"} 2\n\
                    processor_db_write_latency_seconds_sum 0.25\nprocessor_db_write_latency_seconds_count 2\n\
                    processor_active_windows 7\n";
        let f = super::parse(text);
        let produced = &f["producer_events_total"];
        assert_eq!((produced.help.as_deref(), produced.kind.as_deref()), (Some("Events sent"), Some("counter")));
        assert_eq!(produced.values[1].labels["event_type"], "a \"b\"");
        assert_eq!(super::sum(&f, "producer_events_total", &[]), 7.0);
        assert_eq!(super::sum(&f, "producer_events_total", &[("event_type", "click")]), 3.0);
        assert_eq!(f["processor_db_write_latency_seconds"].values.len(), 3);
        assert_eq!(f["processor_active_windows"].values[0].value, 7.0);
        assert_eq!(f.len(), 3);
    }
}
