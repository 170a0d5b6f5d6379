//! The scale-out layout in deploy/scale-out (a compose file and a Kubernetes example) is checked without pulling an
//! image: its references resolve and every weir instance's command line and environment pass `weir up --check`
//! (scripts/check-deploy.py; `docker compose config` too where docker compose is installed).

use std::process::Command;

#[test]
fn the_scale_out_deployment_files_are_valid() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("python3")
        .arg(format!("{root}/scripts/check-deploy.py"))
        .arg(env!("CARGO_BIN_EXE_weir"))
        .arg(format!("{root}/deploy/scale-out"))
        .output()
        .expect("python3 runs scripts/check-deploy.py");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    // Each instance was checked: two in the compose file's analytics pair plus its wedding, two Deployments.
    assert_eq!(stdout.matches("ok: ").count() - stdout.matches("docker compose config").count(), 5, "{stdout}");
}
