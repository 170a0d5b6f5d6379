//! Test harnesses for the crates of weir's tests, behind the `testing` feature (not part of a release build's API).
//!
//! - [`crash`]: kill a child process with SIGKILL mid-work, restart it, and let a last run finish: the harness of
//!   every durability test. It lives here, in the lowest crate, so the log's own crash test can use it too; the
//!   broker's `testing` module re-exports it for the crates above.

pub mod crash {
    //! Crash tests' harness: a test re-executes its own binary as the child that does the work (the test function
    //! sees the environment variable it set and plays the child), kills it with SIGKILL at moments that land
    //! mid-work, restarts it, and finally lets one run finish, so the test can check that nothing acknowledged was
    //! lost and nothing was done twice.

    use std::ffi::OsStr;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use rand::Rng;

    /// The longest a restarted child may take to show progress: a child that cannot even start is a failure, not a
    /// reason to wait forever. 90 s, not less: a transactional relay over the Kafka protocol restarted after a kill
    /// sometimes waits about 60 s before its first commit (an open bug, seen in 3 of 14 runs of
    /// `a_kafka_relay_killed_again_and_again_relays_each_input_once`: 65 s and 125 s runs against 4 s), which a
    /// 20 s bound turned into a failing run now and then.
    const PROGRESS_TIMEOUT: Duration = Duration::from_secs(90);
    /// The longest the last, unkilled run may take to finish what is left.
    const FINISH_TIMEOUT: Duration = Duration::from_secs(60);
    /// Overrides the number of kills (a quick local run, or a long soak).
    pub const KILLS_ENV: &str = "WEIR_TEST_KILLS";

    /// The command that runs test `test` of this test binary alone, in a child with `env` set to `value` (which tells
    /// the test to play the child, and what to work on). Its stdout is discarded and its stderr inherited, so a
    /// child's panic shows in the test's output; the caller may set either otherwise.
    ///
    /// `--exact` and one test thread make the child run only that test; nextest and `cargo test` binaries both
    /// accept these arguments.
    pub fn rerun_test(test: &str, env: &str, value: impl AsRef<OsStr>) -> Command {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut c = Command::new(exe);
        c.args(["--exact", test, "--nocapture", "--test-threads", "1"])
            .env(env, value)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        c
    }

    /// Kills the child that `spawn` starts `kills` times (or [`KILLS_ENV`] times), each time a random moment (up to
    /// 40 ms) after its progress first moves, so every kill lands mid-work however fast the machine is; then runs it
    /// once more and waits for it to finish, successfully. `progress` says how far the work has got, from 0 to
    /// `total`, as seen from outside the child (rows in its database, say); `what` names the child in messages.
    ///
    /// Panics if a restarted child shows no progress in 20 s, if the last run fails or takes over 60 s, or if fewer
    /// than 3 kills (and fewer than half of them) landed mid-work: a test whose kills miss proves nothing, and must
    /// be given more work.
    pub fn kill_and_restart(
        what: &str,
        kills: usize,
        total: i64,
        mut spawn: impl FnMut() -> Child,
        mut progress: impl FnMut() -> i64,
    ) {
        let kills = std::env::var(KILLS_ENV).ok().and_then(|k| k.parse().ok()).unwrap_or(kills);
        let mut rng = rand::thread_rng();
        let (mut mid_work, mut killed) = (0, 0);
        for _ in 0..kills {
            let before = progress();
            if before >= total {
                break;
            }
            let mut child = spawn();
            let round = Instant::now();
            // Until the child has done something since its restart: killing it before that tests only recovery.
            while progress() == before && child.try_wait().unwrap().is_none() {
                if round.elapsed() > PROGRESS_TIMEOUT {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("{what} made no progress in {PROGRESS_TIMEOUT:?} after a restart (at {before} of {total})");
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..40)));
            // SIGKILL: no destructor, no flush, no clean shutdown marker.
            let _ = child.kill();
            child.wait().unwrap();
            killed += 1;
            let after = progress();
            if after > before && after < total {
                mid_work += 1;
            }
        }
        eprintln!("{mid_work} of {killed} kills of {what} landed mid-work");
        assert!(
            mid_work >= kills.min(3) && mid_work * 2 >= killed,
            "only {mid_work} of {killed} kills of {what} landed mid-work: give it more work"
        );
        let mut last = spawn();
        let started = Instant::now();
        loop {
            if let Some(status) = last.try_wait().unwrap() {
                assert!(status.success(), "the last run of {what} failed: {status}");
                return;
            }
            if started.elapsed() > FINISH_TIMEOUT {
                let _ = last.kill();
                let _ = last.wait();
                panic!("the last run of {what} did not finish in {FINISH_TIMEOUT:?} (at {} of {total})", progress());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
