//! The process's metrics in Prometheus' text format, for a system that serves them in a shape of its own (the
//! analytics pipeline's `/api/metrics/...`, as its origin's API did by scraping its services). The metrics are
//! recorded through the `metrics` facade; whoever installs the exporter (weir's HTTP server) registers here how to
//! render them, so that a system reads them without knowing the exporter.

use std::sync::OnceLock;

type Render = Box<dyn Fn() -> String + Send + Sync>;

static RENDER: OnceLock<Render> = OnceLock::new();

/// Registers how to render the metrics; the first registration in the process stays.
pub fn set_renderer(render: impl Fn() -> String + Send + Sync + 'static) {
    let _ = RENDER.set(Box::new(render));
}

/// The metrics as text, or `None` when no exporter registered.
pub fn render() -> Option<String> {
    RENDER.get().map(|render| render())
}
