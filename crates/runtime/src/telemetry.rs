//! Spans a system records with trace and span ids of its own (the W3C `traceparent` its records carry), exported
//! over OTLP/HTTP to a collector (Jaeger, Tempo, the OpenTelemetry Collector) when `OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set, as every OpenTelemetry SDK does.
//!
//! A system calls [`record`] with a finished span: its ids, its parent or the spans it *follows from* (links), its
//! start (the end is now) and attributes. Nothing is built when export is off ([`enabled`] is one atomic load), and
//! without the `otlp` feature the calls compile to nothing.
//!
//! Why not the SDK's tracer: it makes its own span ids, while the ids here are the ones already written into the
//! records' `traceparent` headers, which is what lets a consumer in another process link to them. So spans are
//! handed to `opentelemetry-otlp`'s exporter as finished `SpanData`, by one background thread that batches them (up
//! to 512, or every second) with one exporter per service, so that each service shows under its own name
//! (`service.name`) in the collector. The queue is bounded: when the collector falls behind, spans are dropped and
//! counted (`weir_otlp_spans_dropped_total`), never the records or the process.

use std::time::SystemTime;

/// What a span stands for, as OpenTelemetry's span kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    /// Wrote a record (an API request opening a ticket, say).
    Producer,
    /// Handled a record.
    Consumer,
    Internal,
}

/// A finished span, as [`record`] takes it.
#[derive(Clone, Debug)]
pub struct SpanRecord {
    /// `service.name` in the collector: one per service of a system ("secretary", "cash-desk").
    pub service: &'static str,
    /// `service.namespace`: the system ("repair").
    pub namespace: &'static str,
    /// As OpenTelemetry's conventions name them (`process tickets`).
    pub name: String,
    pub kind: SpanKind,
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    /// Spans this one follows from, each `(trace id, span id)`.
    pub links: Vec<([u8; 16], [u8; 8])>,
    pub start: SystemTime,
    pub attributes: Vec<(&'static str, String)>,
}

/// Why export could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("OTLP over gRPC is not built into weir: point {0} at the collector's OTLP/HTTP port (4318) and set it to http/protobuf or http/json")]
    Grpc(&'static str),
    #[error("{0} is {1:?}: weir exports OTLP over plain HTTP only; send it to a collector on this host or network (http://…:4318)")]
    Https(&'static str, String),
    #[error("cannot start the span exporter: {0}")]
    Exporter(String),
}

#[cfg(feature = "otlp")]
pub use otlp::{enabled, init_from_env, record, shutdown};

/// Without the `otlp` feature nothing is ever exported.
#[cfg(not(feature = "otlp"))]
pub fn enabled() -> bool {
    false
}

#[cfg(not(feature = "otlp"))]
pub fn record(_span: SpanRecord) {}

#[cfg(feature = "otlp")]
mod otlp {
    use std::borrow::Cow;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
    use std::sync::{Mutex, OnceLock};
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant, SystemTime};

    use opentelemetry::trace::{SpanContext, SpanId, Status, TraceFlags, TraceId, TraceState};
    use opentelemetry::{InstrumentationScope, KeyValue};
    use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
    use opentelemetry_sdk::Resource;

    use super::{SpanKind, SpanRecord, TelemetryError};

    /// Spans waiting for the exporter thread; beyond this they are dropped (and counted).
    const QUEUE: usize = 16_384;
    const MAX_BATCH: usize = 512;
    const FLUSH_EVERY: Duration = Duration::from_secs(1);
    /// How long [`shutdown`] waits for the last spans to leave.
    const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

    enum Command {
        /// A finished span and when it ended.
        Span(Box<SpanRecord>, SystemTime),
        Shutdown,
    }

    struct Exporting {
        tx: SyncSender<Command>,
        thread: Mutex<Option<JoinHandle<()>>>,
    }

    static ENABLED: AtomicBool = AtomicBool::new(false);
    static EXPORTING: OnceLock<Exporting> = OnceLock::new();

    /// Whether spans are being exported: callers skip building a [`SpanRecord`] when not.
    pub fn enabled() -> bool {
        ENABLED.load(Ordering::Relaxed)
    }

    /// Starts exporting when the environment names an OTLP endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT`,
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; `OTEL_EXPORTER_OTLP_PROTOCOL` http/protobuf (the default) or
    /// http/json; headers and timeout as the OTLP exporter reads them). Returns the endpoint when it started.
    /// Call it once; it blocks briefly (the HTTP client is built on a thread of its own, never inside tokio).
    pub fn init_from_env() -> Result<Option<String>, TelemetryError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let (name, endpoint) = match (var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), var("OTEL_EXPORTER_OTLP_ENDPOINT")) {
            (Some(e), _) => ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", e),
            (None, Some(e)) => ("OTEL_EXPORTER_OTLP_ENDPOINT", e),
            (None, None) => return Ok(None),
        };
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        for protocol in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
            if var(protocol).is_some_and(|p| p.trim().eq_ignore_ascii_case("grpc")) {
                return Err(TelemetryError::Grpc(protocol));
            }
        }
        if endpoint.trim().to_ascii_lowercase().starts_with("https://") {
            return Err(TelemetryError::Https(name, endpoint));
        }
        // Build one exporter now, so that a bad setting fails `weir up` rather than every later export; on a thread
        // of its own, as the blocking HTTP client may not be built or dropped on an async runtime's thread.
        std::thread::spawn(|| build_exporter("weir", "weir").map(drop))
            .join()
            .map_err(|_| TelemetryError::Exporter("building the exporter panicked".into()))??;
        let (tx, rx) = sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("otlp-export".into())
            .spawn(move || export_loop(rx))
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        if EXPORTING.set(Exporting { tx, thread: Mutex::new(Some(thread)) }).is_err() {
            return Err(TelemetryError::Exporter("already started".into()));
        }
        ENABLED.store(true, Ordering::Relaxed);
        Ok(Some(endpoint))
    }

    /// Queues a finished span for export (ending now); dropped, and counted, when the queue is full.
    pub fn record(span: SpanRecord) {
        let Some(exporting) = EXPORTING.get() else { return };
        match exporting.tx.try_send(Command::Span(Box::new(span), SystemTime::now())) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                metrics::counter!("weir_otlp_spans_dropped_total").increment(1);
            }
        }
    }

    /// Sends what is queued and stops the exporter thread, waiting at most a few seconds (an unreachable collector
    /// never holds the process up).
    pub fn shutdown() {
        let Some(exporting) = EXPORTING.get() else { return };
        ENABLED.store(false, Ordering::Relaxed);
        // A blocking send: the queue may be full, and Shutdown must come after the spans before it.
        let sent = send_within(&exporting.tx, Command::Shutdown, SHUTDOWN_WAIT);
        let thread = exporting.thread.lock().ok().and_then(|mut t| t.take());
        if let (true, Some(thread)) = (sent, thread) {
            let deadline = Instant::now() + SHUTDOWN_WAIT;
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if thread.is_finished() {
                let _ = thread.join();
            } else {
                tracing::warn!("the OTLP exporter did not finish within {SHUTDOWN_WAIT:?}; its last spans are lost");
            }
        }
    }

    /// `SyncSender::send` with a deadline (std has none): retries while the queue is full.
    fn send_within(tx: &SyncSender<Command>, mut command: Command, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            match tx.try_send(command) {
                Ok(()) => return true,
                Err(TrySendError::Full(c)) if Instant::now() < deadline => {
                    command = c;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return false,
            }
        }
    }

    fn build_exporter(
        service: &'static str,
        namespace: &'static str,
    ) -> Result<opentelemetry_otlp::SpanExporter, TelemetryError> {
        use opentelemetry_otlp::WithExportConfig as _;
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        let resource = Resource::builder()
            .with_service_name(service)
            .with_attribute(KeyValue::new("service.namespace", namespace))
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        exporter.set_resource(&resource);
        Ok(exporter)
    }

    fn span_data(span: SpanRecord, end: SystemTime) -> SpanData {
        let context = |trace: [u8; 16], span: [u8; 8], remote: bool| {
            SpanContext::new(
                TraceId::from_bytes(trace),
                SpanId::from_bytes(span),
                TraceFlags::SAMPLED,
                remote,
                TraceState::default(),
            )
        };
        // Non-exhaustive: built from its default.
        let mut links = SpanLinks::default();
        links.links =
            span.links.iter().map(|(t, s)| opentelemetry::trace::Link::with_context(context(*t, *s, true))).collect();
        SpanData {
            span_context: context(span.trace_id, span.span_id, false),
            parent_span_id: span.parent_span_id.map(SpanId::from_bytes).unwrap_or(SpanId::INVALID),
            parent_span_is_remote: false,
            span_kind: match span.kind {
                SpanKind::Producer => opentelemetry::trace::SpanKind::Producer,
                SpanKind::Consumer => opentelemetry::trace::SpanKind::Consumer,
                SpanKind::Internal => opentelemetry::trace::SpanKind::Internal,
            },
            name: Cow::Owned(span.name),
            start_time: span.start.min(end),
            end_time: end,
            attributes: span.attributes.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links,
            status: Status::Unset,
            instrumentation_scope: InstrumentationScope::builder("weir")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        }
    }

    /// The exporter thread: batches per service, sends each batch with that service's exporter.
    fn export_loop(rx: Receiver<Command>) {
        let mut exporters: HashMap<&'static str, Option<opentelemetry_otlp::SpanExporter>> = HashMap::new();
        let mut pending: HashMap<&'static str, (&'static str, Vec<SpanData>)> = HashMap::new();
        let mut queued = 0usize;
        let mut last_flush = Instant::now();
        let mut failing = false;
        let mut flush = |pending: &mut HashMap<&'static str, (&'static str, Vec<SpanData>)>| {
            for (service, (namespace, batch)) in pending.drain() {
                if batch.is_empty() {
                    continue;
                }
                let exporter = exporters.entry(service).or_insert_with(|| match build_exporter(service, namespace) {
                    Ok(e) => Some(e),
                    Err(e) => {
                        tracing::warn!(service, error = %e, "cannot build the OTLP exporter; this service's spans are dropped");
                        None
                    }
                });
                let n = batch.len() as u64;
                let Some(exporter) = exporter else {
                    metrics::counter!("weir_otlp_spans_dropped_total").increment(n);
                    continue;
                };
                match futures_executor::block_on(exporter.export(batch)) {
                    Ok(()) => {
                        metrics::counter!("weir_otlp_spans_exported_total").increment(n);
                        if failing {
                            tracing::info!("OTLP export works again");
                            failing = false;
                        }
                    }
                    Err(e) => {
                        metrics::counter!("weir_otlp_export_errors_total").increment(1);
                        metrics::counter!("weir_otlp_spans_dropped_total").increment(n);
                        // Once per outage, not once per batch.
                        if !failing {
                            tracing::warn!(error = %e, "OTLP export failed; spans are dropped until the collector answers");
                            failing = true;
                        }
                    }
                }
            }
        };
        loop {
            let wait = FLUSH_EVERY.saturating_sub(last_flush.elapsed());
            match rx.recv_timeout(wait) {
                Ok(Command::Span(span, end)) => {
                    let (service, namespace) = (span.service, span.namespace);
                    let data = span_data(*span, end);
                    pending.entry(service).or_insert_with(|| (namespace, Vec::new())).1.push(data);
                    queued += 1;
                    if queued >= MAX_BATCH {
                        flush(&mut pending);
                        queued = 0;
                        last_flush = Instant::now();
                    }
                }
                Ok(Command::Shutdown) | Err(RecvTimeoutError::Disconnected) => {
                    flush(&mut pending);
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {
                    flush(&mut pending);
                    queued = 0;
                    last_flush = Instant::now();
                }
            }
        }
    }
}
