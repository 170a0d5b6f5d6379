//! Fuzzes the running HTTP API against its own `/openapi.json` with schemathesis (PyPI, installed by
//! scripts/test.sh): no 5xx, every status and body as documented, schema-valid requests accepted and invalid ones
//! refused. A missing schemathesis fails this test.

use std::process::Command;

use weir_broker::{Broker, BrokerConfig};
use weir_http::{HttpConfig, HttpServer};

#[test]
fn the_api_matches_its_openapi_document_under_fuzzing() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let broker = runtime.block_on(async { Broker::open(BrokerConfig::new(dir.path().join("data"))) }).unwrap();
    let server = runtime.block_on(HttpServer::start(broker.clone(), HttpConfig::new("127.0.0.1:0".parse().unwrap())));
    let server = server.unwrap();
    let url = format!("http://{}/openapi.json", server.local_addr);
    let out = Command::new("schemathesis")
        .current_dir(dir.path())
        .args(["run", &url, "--checks", "all", "--max-examples", "60", "--generation-database", "none"])
        .args(["--phases", "examples,coverage,fuzzing", "--request-timeout", "10"])
        .env("NO_COLOR", "1")
        .output()
        .expect("schemathesis is not installed: run scripts/test.sh, which installs it");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "schemathesis found problems:\n{report}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(report.contains("passed"), "{report}");
    runtime.block_on(server.stop());
    broker.shutdown();
}
