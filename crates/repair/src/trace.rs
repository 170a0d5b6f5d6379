//! W3C trace context across the shop's hops. Every record carries the `traceparent` of the span that produced it;
//! a consumer's span joins the same trace and is *linked* to the producer's span ("follows from", as the origin's
//! Python and Elixir services did for Datadog) rather than parented to it: a hop may run long after the event was
//! written, and a parent would make the producer's span look as long as the whole journey.
//!
//! Each hop's span is a `tracing` span carrying `trace_id`, `span_id` and `follows_from` fields (the log lines), and
//! the same span with the same ids and link is exported over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set
//! (`weir_runtime::telemetry`), each service under its own `service.name`.

use std::time::SystemTime;

use rand::Rng;
use weir_runtime::telemetry::{self, SpanKind, SpanRecord};

/// The header carrying the trace context (W3C Trace Context, as OpenTelemetry's Kafka propagators write it).
pub const TRACEPARENT: &str = "traceparent";

/// A span's place in a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

impl TraceContext {
    /// The first span of a new trace.
    pub fn root() -> TraceContext {
        let mut rng = rand::thread_rng();
        TraceContext { trace_id: rng.gen(), span_id: rng.gen() }
    }

    /// A new span of the same trace (a hop that follows from this one).
    pub fn follow(&self) -> TraceContext {
        TraceContext { trace_id: self.trace_id, span_id: rand::thread_rng().gen() }
    }

    /// `00-<trace id>-<span id>-01` (sampled).
    pub fn to_header(&self) -> String {
        format!("00-{}-{}-01", hex(&self.trace_id), hex(&self.span_id))
    }

    /// A `traceparent` value; `None` when it is not one (the hop then starts a new trace).
    pub fn parse(header: &[u8]) -> Option<TraceContext> {
        let s = std::str::from_utf8(header).ok()?;
        let mut parts = s.trim().split('-');
        let (version, trace, span, _flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2 || version == "ff" {
            return None;
        }
        let trace_id = unhex::<16>(trace)?;
        let span_id = unhex::<8>(span)?;
        // All zeros is invalid in both places.
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceContext { trace_id, span_id })
    }

    pub fn trace_hex(&self) -> String {
        hex(&self.trace_id)
    }

    pub fn span_hex(&self) -> String {
        hex(&self.span_id)
    }
}

/// The span a consumer starts for a record whose `traceparent` header is `header` (or a new trace when there is
/// none): linked to the producer's span, not its child; and that link.
pub fn follow_from(header: Option<&[u8]>) -> (TraceContext, Option<TraceContext>) {
    follow(header.and_then(TraceContext::parse).as_ref())
}

/// [`follow_from`] for a trace context already parsed.
pub fn follow(producer: Option<&TraceContext>) -> (TraceContext, Option<TraceContext>) {
    match producer {
        Some(p) => (p.follow(), Some(*p)),
        None => (TraceContext::root(), None),
    }
}

/// What a hop did, named as OpenTelemetry's messaging conventions name spans (`<operation> <destination>`).
#[derive(Clone, Copy, Debug)]
pub enum HopKind {
    /// A record written to `topic` (ticketing opening a ticket through the outbox).
    Send { topic: &'static str },
    /// A record of `topic` handled.
    Process { topic: &'static str },
    /// Work the service started itself (the till paying repairs whose time has come).
    Internal { name: &'static str },
}

/// A hop's span for `ticket`: entered by the caller around its work on that ticket, and exported as a finished span
/// (from `started` to now, linked to the producer's span) when OTLP export is on.
pub fn hop_span(
    service: &'static str,
    hop: HopKind,
    ticket: &uuid::Uuid,
    trace: &TraceContext,
    link: Option<&TraceContext>,
    started: SystemTime,
) -> tracing::Span {
    if telemetry::enabled() {
        // OpenTelemetry's messaging attributes.
        let messaging = |operation: &str, topic: &str| {
            vec![
                ("messaging.system", "kafka".to_string()),
                ("messaging.operation.type", operation.to_string()),
                ("messaging.destination.name", topic.to_string()),
            ]
        };
        let (name, kind, mut attributes) = match hop {
            HopKind::Send { topic } => (format!("send {topic}"), SpanKind::Producer, messaging("send", topic)),
            HopKind::Process { topic } => {
                let mut attributes = messaging("process", topic);
                attributes.push(("messaging.consumer.group.name", service.to_string()));
                (format!("process {topic}"), SpanKind::Consumer, attributes)
            }
            HopKind::Internal { name } => (name.to_string(), SpanKind::Internal, Vec::new()),
        };
        attributes.push(("repair.ticket_id", ticket.to_string()));
        telemetry::record(SpanRecord {
            service,
            namespace: "repair",
            name,
            kind,
            trace_id: trace.trace_id,
            span_id: trace.span_id,
            parent_span_id: None,
            links: link.map(|l| vec![(l.trace_id, l.span_id)]).unwrap_or_default(),
            start: started,
            attributes,
        });
    }
    tracing::debug_span!(
        "repair.hop",
        service,
        %ticket,
        trace_id = %trace.trace_hex(),
        span_id = %trace.span_hex(),
        follows_from = %link.map(|l| l.span_hex()).unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_rejects_what_w3c_rejects() {
        let t = TraceContext::root();
        let h = t.to_header();
        assert_eq!(h.len(), 55);
        assert_eq!(TraceContext::parse(h.as_bytes()), Some(t));
        let next = t.follow();
        assert_eq!(next.trace_id, t.trace_id);
        assert_ne!(next.span_id, t.span_id);
        assert!(TraceContext::parse(b"00-00000000000000000000000000000000-0000000000000001-01").is_none());
        assert!(TraceContext::parse(b"ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").is_none());
        assert!(TraceContext::parse(b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b71692033-01").is_none());
        assert!(TraceContext::parse(b"garbage").is_none());
        let (span, link) = follow_from(Some(b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"));
        assert_eq!(span.trace_hex(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(link.unwrap().span_hex(), "b7ad6b7169203331");
    }
}
