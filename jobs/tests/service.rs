//! The online run as a continuous service, in its real mode: the `tidemark` binary running
//! `run --until none` against a real tansu broker, stopped by signals and killed with SIGKILL.
//!
//! Every scenario ends with a bounded catch-up (`--until latest`, which seals the root) and is
//! compared with an uninterrupted bounded run of the same topic: byte-identical primary truths
//! and manifest, `verify` passing, every decision on `fp.bus.decisions.v1` exactly once and
//! equal to the audit log, and the traffic/control topics holding exactly the archive's
//! envelopes, once each. `scripts/soak.sh` runs the kill matrix over more seeds.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tidemark_jobs::broker::{ensure_topics, free_port, topics, LocalBroker, Storage};
use tidemark_jobs::config;
use tidemark_jobs::demo::{audit_rows, decisions_from_topic};
use tidemark_jobs::kafka::{produce_world, read_topic};
use tidemark_jobs::world::WorldConfig;
use tidemark_sources::KafkaConn;

use support::{s3d, truths};

const PROFILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/profiles/service.toml"
);

/// The scenarios run one at a time: each starts a broker and several multi-threaded
/// processes, and on a 2-core machine running them together would measure contention.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The CLI, its metrics endpoint on an ephemeral loopback port (tests run many at once).
fn tidemark() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tidemark"));
    c.env("TIDEMARK__WIRING__METRICS_ADDR", "127.0.0.1:0");
    c
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

struct Env {
    broker: LocalBroker,
    conn: KafkaConn,
    dir: tempfile::TempDir,
}

impl Env {
    /// A broker with the topics and a world of `events` records (seed `seed`) in the ingress
    /// topic: 20 records per simulated second, so 6,000 records span 5 one-minute commits.
    fn new(seed: u64, events: u64) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let broker = LocalBroker::start(
            0,
            Storage::Sqlite(dir.path().join("broker")),
            &dir.path().join("broker.log"),
        )
        .unwrap_or_else(|e| panic!("cannot start the local broker: {e:#}"));
        let profile = config::load(PROFILE).unwrap();
        let conn = profile.kafka_conn(Some(&broker.addr()));
        ensure_topics(&conn, &profile).unwrap();
        let world = WorldConfig {
            events,
            seed,
            partitions: 4,
            bad_rate: 0.02,
            rate_per_sec: 20.0,
            ..Default::default()
        };
        produce_world(&conn, &world, false, None, &mut |_, _| {}).unwrap();
        Env { broker, conn, dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run_args(&self, data: &Path) -> Vec<String> {
        vec![
            "run".into(),
            "--profile".into(),
            PROFILE.into(),
            "--brokers".into(),
            self.conn.brokers.clone(),
            "--data".into(),
            data.display().to_string(),
        ]
    }

    /// An uninterrupted bounded run, not publishing: the reference.
    fn reference(&self) -> PathBuf {
        let data = self.path("reference");
        let out = tidemark()
            .args(self.run_args(&data))
            .args(["--until", "latest", "--no-publish"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        data
    }

    /// Starts the service (`--until none`, publishing) as `processes` x `threads`.
    fn start(&self, data: &Path, threads: usize, processes: usize, hostfile: &Path) -> Vec<Child> {
        self.start_env(data, threads, processes, hostfile, None)
    }

    /// [`Env::start`] with `TIDEMARK_FAILPOINT` set to `failpoint`.
    fn start_env(
        &self,
        data: &Path,
        threads: usize,
        processes: usize,
        hostfile: &Path,
        failpoint: Option<&str>,
    ) -> Vec<Child> {
        (0..processes)
            .map(|p| {
                let mut cmd = tidemark();
                cmd.args(self.run_args(data))
                    .args(["-w", &threads.to_string()])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                if let Some(f) = failpoint {
                    cmd.env("TIDEMARK_FAILPOINT", f);
                }
                if processes > 1 {
                    cmd.args(["-n", &processes.to_string(), "-p", &p.to_string()])
                        .arg("--hostfile")
                        .arg(hostfile);
                }
                cmd.spawn().unwrap()
            })
            .collect()
    }
}

fn signal(children: &[Child], sig: libc::c_int) {
    for c in children {
        // SAFETY: sending a signal to a child process we spawned.
        unsafe {
            libc::kill(c.id() as libc::pid_t, sig);
        }
    }
}

fn wait_all(children: Vec<Child>) -> Vec<Output> {
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

fn count_files(root: &Path, sub: &str) -> usize {
    let mut n = 0;
    let mut stack = vec![root.join(sub)];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                n += 1;
            }
        }
    }
    n
}

/// Waits until `expected` decisions are on the topic (restarting the service, as a supervisor
/// would, whenever it exits, when `restart` is given), then stops it with SIGTERM and checks
/// that every process exits 0. Returns their outputs.
fn decide_all_then_stop(
    env: &Env,
    mut children: Vec<Child>,
    reference: &Path,
    limit: Duration,
    restart: Option<(&Path, &Path)>,
    what: &str,
) -> Vec<Output> {
    let t0 = Instant::now();
    let mut restarts = 0;
    // Decisions plus their intents, as the reference decided them: cheap to poll as the
    // topic's high watermarks (exactly-once is checked record by record afterwards).
    let records: usize = audit_rows(reference)
        .unwrap()
        .iter()
        .map(|r| {
            1 + serde_json::from_str::<Vec<serde_json::Value>>(&r.action_intents)
                .map_or(0, |v| v.len())
        })
        .sum();
    let config = env.conn.client_config();
    loop {
        let n: u64 = tidemark_sinks::kafka::high_watermarks(
            &config,
            &[topics::DECISIONS],
            Duration::from_secs(10),
        )
        .map_or(0, |v| v.iter().map(|(_, _, o)| o).sum());
        if n as usize >= records {
            break;
        }
        if let Some((data, hostfile)) = restart {
            if children
                .iter_mut()
                .any(|c| matches!(c.try_wait(), Ok(Some(_))))
            {
                restarts += 1;
                assert!(restarts <= 5, "{what}: the service keeps failing");
                wait_all(std::mem::take(&mut children));
                children = env.start(data, 1, 1, hostfile);
            }
        }
        assert!(
            t0.elapsed() < limit,
            "{what}: only {n} of {records} decision records published after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    signal(&children, libc::SIGTERM);
    let outs = wait_all(children);
    for o in &outs {
        assert!(
            o.status.success(),
            "{what}: SIGTERM must exit 0: {}",
            text(o)
        );
    }
    outs
}

/// `verify` must not accept the root as a complete basis.
fn assert_incomplete(data: &Path, what: &str) {
    let v = tidemark()
        .args(["verify", "--data"])
        .arg(data)
        .output()
        .unwrap();
    assert!(
        !v.status.success(),
        "{what}: verify accepted an incomplete root"
    );
    assert!(text(&v).contains("incomplete"), "{what}: {}", text(&v));
}

/// The end-state checks shared by every scenario.
fn assert_equals_reference(env: &Env, data: &Path, reference: &Path, what: &str) {
    let (got, want) = (truths(data), truths(reference));
    assert!(want.keys().any(|k| k.starts_with("archive/manifests/")));
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{what}: file lists differ"
    );
    for (path, bytes) in &want {
        assert!(got[path] == *bytes, "{what}: {path} differs");
    }
    let v = tidemark()
        .args(["verify", "--data"])
        .arg(data)
        .output()
        .unwrap();
    assert!(v.status.success(), "{what}: verify: {}", text(&v));
    // Every decision exactly once on the topic, equal to the audit log.
    let topic = decisions_from_topic(&env.conn).unwrap();
    let audit = audit_rows(data).unwrap();
    let mut ids: Vec<&str> = topic.iter().map(|a| a.decision_id.as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), topic.len(), "{what}: a decision appears twice");
    assert!(
        topic == audit,
        "{what}: decisions topic ({}) differs from the audit log ({})",
        topic.len(),
        audit.len()
    );
    // Traffic + control hold exactly the archive's envelopes, once each, plus the root's
    // governance fact: its policy activation (at least once, always the same act).
    let (facts, mut published): (Vec<Vec<u8>>, Vec<Vec<u8>>) = [topics::TRAFFIC, topics::CONTROL]
        .iter()
        .flat_map(|t| read_topic(&env.conn, t).unwrap())
        .map(|r| r.bytes)
        .partition(|b| {
            serde_json::from_slice::<serde_json::Value>(b)
                .is_ok_and(|v| v["producer"] == "governance" && v["event_type"] == "gov.fact.v1")
        });
    let facts: Vec<serde_json::Value> = facts
        .iter()
        .map(|b| serde_json::from_slice(b).unwrap())
        .collect();
    assert!(
        !facts.is_empty(),
        "{what}: no policy.activated fact on the control topic"
    );
    assert!(
        facts
            .iter()
            .all(|f| f["payload"]["kind"] == "policy.activated"
                && f["event_id"] == facts[0]["event_id"]),
        "{what}: governance facts {facts:?}"
    );
    published.sort();
    let mut archived: Vec<Vec<u8>> = Vec::new();
    for (path, bytes) in truths(data) {
        if path.starts_with("archive/t=") {
            archived.extend(
                tidemark_sinks::parquet::decode_archive(bytes.into(), &path)
                    .unwrap()
                    .into_iter()
                    .map(|a| a.envelope.into_bytes()),
            );
        }
    }
    archived.sort();
    let mut dups: Vec<String> = published
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| String::from_utf8_lossy(&w[0]).chars().take(300).collect())
        .collect();
    dups.dedup();
    assert!(
        dups.is_empty(),
        "{what}: {} envelopes published more than once, e.g. {:?}",
        dups.len(),
        dups.iter().take(3).collect::<Vec<_>>()
    );
    let extra: Vec<String> = published
        .iter()
        .filter(|p| archived.binary_search(p).is_err())
        .map(|p| String::from_utf8_lossy(p).chars().take(400).collect())
        .collect();
    assert!(
        extra.is_empty(),
        "{what}: {} published envelopes are not in the archive, e.g. {:?}",
        extra.len(),
        extra.iter().take(2).collect::<Vec<_>>()
    );
    assert_eq!(
        published.len(),
        archived.len(),
        "{what}: traffic/control count"
    );
    assert!(
        published == archived,
        "{what}: traffic/control differ from the archive"
    );
}

/// Deterministic pseudo-random numbers for kill points.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
}

/// Kills the service 3 times with SIGKILL (at 20–90% of the receipts written, the second kill
/// shortly after a restart, during recovery), restarts it each time, lets the last one decide
/// everything, stops it with SIGTERM (exit 0), seals with a bounded run and compares.
fn kill_matrix(seed: u64, threads: usize, processes: usize) {
    let env = Env::new(seed, 4_000);
    let reference = env.reference();
    let chunks = count_files(&reference, "ig/receipts");
    let data = env.path("service");
    let hostfile = env.path("hosts");
    let ports: Vec<String> = (0..processes)
        .map(|_| format!("127.0.0.1:{}", free_port().unwrap()))
        .collect();
    std::fs::write(&hostfile, ports.join("\n")).unwrap();
    let mut rng = Lcg(seed * 7919 + threads as u64 * 31 + processes as u64);
    let what = format!("seed {seed}, {processes} process(es) x {threads} worker(s)");
    for kill in 0..3 {
        let children = env.start(&data, threads, processes, &hostfile);
        let t0 = Instant::now();
        if kill == 1 {
            // During recovery: shortly after the restart, while state is being rebuilt.
            std::thread::sleep(Duration::from_millis(rng.range(200, 1_500)));
        } else {
            let target = (chunks as u64 * rng.range(20, 90) / 100).max(1) as usize;
            while count_files(&data, "ig/receipts") < target
                && t0.elapsed() < Duration::from_secs(60)
            {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        signal(&children, libc::SIGKILL);
        for o in wait_all(children) {
            assert!(!o.status.success(), "{what}: a killed run cannot succeed");
        }
    }
    // The last run: every decision must reach the topic (the partitions go idle and release
    // the frontier), then SIGTERM stops it cleanly.
    let children = env.start(&data, threads, processes, &hostfile);
    decide_all_then_stop(
        &env,
        children,
        &reference,
        Duration::from_secs(180),
        None,
        &what,
    );
    assert_incomplete(&data, &what);
    // Seal: a bounded catch-up resumes from the last commit and writes the manifest.
    let out = tidemark()
        .args(env.run_args(&data))
        .args(["--until", "latest", "-w", &threads.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{what}: {}", text(&out));
    assert!(text(&out).contains("resumed from commit"), "{}", text(&out));
    assert_equals_reference(&env, &data, &reference, &what);
}

/// The seed of a kill-matrix test: `TIDEMARK_KILL_SEED` (scripts/soak.sh) or `default`.
fn seed(default: u64) -> u64 {
    std::env::var("TIDEMARK_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// World seeds per topology (`TIDEMARK_KILL_SEED` runs one chosen seed instead;
/// scripts/soak.sh runs many): CI keeps to one per topology, which fits the 30-minute budget
/// (the service scenarios run one at a time and are CI's longest chain).
fn seeds(defaults: &[u64]) -> Vec<u64> {
    match std::env::var("TIDEMARK_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(s) => vec![s],
        None => defaults.to_vec(),
    }
}

#[test]
fn kill_matrix_one_worker() {
    let _serial = serial();
    for s in seeds(&[11]) {
        kill_matrix(s, 1, 1);
    }
}

#[test]
fn kill_matrix_two_workers() {
    let _serial = serial();
    for s in seeds(&[12]) {
        kill_matrix(s, 2, 1);
    }
}

#[test]
fn kill_matrix_two_processes() {
    let _serial = serial();
    for s in seeds(&[13]) {
        kill_matrix(s, 1, 2);
    }
}

/// Two hard bounces of the broker (SIGKILL, restart on its SQLite file) while the service
/// reads and publishes. The service retries; if it gives up it exits non-zero and is started
/// again, as a supervisor would. The end state equals the uninterrupted run.
#[test]
fn broker_hard_bounces_lose_and_duplicate_nothing() {
    let _serial = serial();
    let mut env = Env::new(seed(17), 6_000);
    let reference = env.reference();
    let chunks = count_files(&reference, "ig/receipts");
    let data = env.path("service");
    let hostfile = env.path("hosts");
    let children = env.start(&data, 1, 1, &hostfile);
    for fraction in [30, 60] {
        let t0 = Instant::now();
        while count_files(&data, "ig/receipts") < chunks * fraction / 100
            && t0.elapsed() < Duration::from_secs(30)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        env.broker.kill_and_restart().unwrap();
    }
    let what = "broker hard bounces";
    let limit = Duration::from_secs(150);
    decide_all_then_stop(
        &env,
        children,
        &reference,
        limit,
        Some((&data, &hostfile)),
        what,
    );
    let out = tidemark()
        .args(env.run_args(&data))
        .args(["--until", "latest"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_equals_reference(&env, &data, &reference, what);
}

/// Continuous mode over a backlog: every decision reaches the topic once the partitions go
/// idle (2 s), without any bound on the run, and equals the bounded run's.
#[test]
fn backlog_is_decided_without_an_end_and_sigterm_then_restart_continues() {
    let _serial = serial();
    let env = Env::new(5, 4_000);
    let reference = env.reference();
    let data = env.path("service");
    let hostfile = env.path("hosts");
    let children = env.start(&data, 1, 1, &hostfile);
    // The backlog is read in seconds; the rest is idle_timeout (2 s) and warm-up.
    let limit = Duration::from_secs(60);
    let outs = decide_all_then_stop(&env, children, &reference, limit, None, "backlog");
    assert!(text(&outs[0]).contains("stopped"), "{}", text(&outs[0]));
    // A second run on the held root is refused while the first one runs.
    let children = env.start(&data, 1, 1, &hostfile);
    std::thread::sleep(Duration::from_millis(500));
    let second = tidemark().args(env.run_args(&data)).output().unwrap();
    assert!(!second.status.success());
    assert!(
        text(&second).contains("held by another run"),
        "{}",
        text(&second)
    );
    signal(&children, libc::SIGTERM);
    for o in wait_all(children) {
        assert!(o.status.success(), "{}", text(&o));
        assert!(text(&o).contains("resumed from commit"), "{}", text(&o));
    }
    let out = tidemark()
        .args(env.run_args(&data))
        .args(["--until", "latest"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_equals_reference(&env, &data, &reference, "SIGTERM + restart");
    // The sealed root takes no more appends.
    let again = tidemark().args(env.run_args(&data)).output().unwrap();
    assert!(!again.status.success());
    assert!(text(&again).contains("sealed"), "{}", text(&again));
}

/// `--from` on a fresh root would decide from cold state: refused.
#[test]
fn from_on_a_fresh_root_is_refused() {
    let _serial = serial();
    let env = Env::new(3, 500);
    let out = tidemark()
        .args(env.run_args(&env.path("fresh")))
        .args(["--from", "0:100", "--until", "latest"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("cold state"), "{}", text(&out));
}

/// A run that fails (a damaged file log) leaves no manifest that verify accepts.
#[test]
fn a_failed_run_is_reported_incomplete() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("log");
    let w = tidemark()
        .args(["world", "--events", "3000", "--out"])
        .arg(&log)
        .output()
        .unwrap();
    assert!(w.status.success(), "{}", text(&w));
    // Truncate partition 1 in the middle of a record.
    let p1 = log.join("partition-00001.log");
    let bytes = std::fs::read(&p1).unwrap();
    std::fs::write(&p1, &bytes[..bytes.len() / 2]).unwrap();
    let data = tmp.path().join("data");
    let out = tidemark()
        .args(["run", "--profile", PROFILE, "--ingress"])
        .arg(format!("file:{}", log.display()))
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!text(&out).contains("panicked"), "{}", text(&out));
    assert_incomplete(&data, "a failed run");
}

/// Live traffic: with records arriving at 200/s, decisions come within allowed_lateness (5 s)
/// plus 1 s of the ingress record timestamp (the run's own latency histogram, recorded in its
/// run record), the continuous service stopped while traffic still flows.
#[test]
fn live_decisions_come_within_allowed_lateness_plus_one_second() {
    let _serial = serial();
    let env = Env::new(19, 0);
    let data = env.path("service");
    let hostfile = env.path("hosts");
    let children = env.start(&data, 1, 1, &hostfile);
    let world = WorldConfig {
        events: 4_000,
        seed: 19,
        partitions: 4,
        bad_rate: 0.0,
        start_ms: tidemark_jobs::wallclock::now_ms(),
        rate_per_sec: 200.0,
        jitter_ms: 0,
        follow_up_scale: 0.01,
        ..Default::default()
    };
    let conn = env.conn.clone();
    let producer = std::thread::spawn(move || {
        produce_world(&conn, &world, true, None, &mut |_, _| {}).unwrap();
    });
    std::thread::sleep(Duration::from_secs(14));
    signal(&children, libc::SIGTERM);
    let outs = wait_all(children);
    assert!(outs[0].status.success(), "{}", text(&outs[0]));
    producer.join().unwrap();
    let runs: Vec<_> = std::fs::read_dir(data.join("runs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(runs.len(), 1);
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&runs[0]).unwrap()).unwrap();
    let lat = &record["latency_ms"];
    let (n, p50, p99) = (
        lat["decisions"].as_u64().unwrap_or(0),
        lat["p50"].as_u64().unwrap_or(0),
        lat["p99"].as_u64().unwrap_or(u64::MAX),
    );
    assert!(n > 500, "only {n} decisions while traffic flowed: {record}");
    assert!(
        p50 >= 5_000,
        "decided before allowed_lateness passed: p50 {p50} ms"
    );
    assert!(
        p99 <= 6_000,
        "p99 {p99} ms > allowed_lateness + 1 s: {record}"
    );
}

/// A crash at a failpoint, then a restart: the same end state as the uninterrupted run.
#[cfg(feature = "failpoints")]
fn failpoint_then_restart(point: &str, threads: usize) {
    let env = Env::new(seed(23), 6_000);
    let reference = env.reference();
    let data = env.path("service");
    let hostfile = env.path("hosts");
    let what = format!("failpoint {point}, {threads} worker(s)");
    if point.starts_with("during-recovery") {
        // Commit something first, so that the restart has archive state to rebuild.
        let children = env.start(&data, threads, 1, &hostfile);
        let t0 = Instant::now();
        while count_files(&data, "ckpt/commits") < 3 && t0.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(20));
        }
        signal(&children, libc::SIGKILL);
        wait_all(children);
    }
    let mut children = env.start_env(&data, threads, 1, &hostfile, Some(point));
    let t0 = Instant::now();
    let outs = loop {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{what}: the failpoint was never reached"
        );
        std::thread::sleep(Duration::from_millis(50));
        if children
            .iter_mut()
            .all(|c| matches!(c.try_wait(), Ok(Some(_))))
        {
            break wait_all(std::mem::take(&mut children));
        }
    };
    assert!(
        outs.iter().any(|o| text(o).contains("failpoint")),
        "{what}: {}",
        text(&outs[0])
    );
    let children = env.start(&data, threads, 1, &hostfile);
    decide_all_then_stop(
        &env,
        children,
        &reference,
        Duration::from_secs(180),
        None,
        &what,
    );
    let out = tidemark()
        .args(env.run_args(&data))
        .args(["--until", "latest", "-w", &threads.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{what}: {}", text(&out));
    assert_equals_reference(&env, &data, &reference, &what);
}

#[cfg(feature = "failpoints")]
#[test]
fn failpoint_after_a_file_write_before_the_commit() {
    let _serial = serial();
    failpoint_then_restart("after-file-write:12", 1);
}

#[cfg(feature = "failpoints")]
#[test]
fn failpoint_after_produce_before_the_ack() {
    let _serial = serial();
    failpoint_then_restart("after-produce:4000", 1);
}

#[cfg(feature = "failpoints")]
#[test]
fn failpoint_between_two_workers_commit_tokens() {
    let _serial = serial();
    failpoint_then_restart("after-token:2", 2);
}

#[cfg(feature = "failpoints")]
#[test]
fn failpoint_during_the_recovery_replay() {
    let _serial = serial();
    failpoint_then_restart("during-recovery:1", 1);
}

/// The continuous service on an S3 root (`tidemark-s3d` on loopback): the S3 server is killed
/// while the service runs and a second half of the world arrives during the outage; the
/// service retries its writes (and says so), decides everything once the server is back, stops
/// on SIGTERM, and a bounded catch-up resumes from the commit on S3. The end state equals the
/// uninterrupted local-filesystem run byte for byte; verify and replay (MATCH) read S3.
#[test]
fn service_on_s3_survives_a_store_restart_and_equals_the_local_run() {
    let _serial = serial();
    let env = Env::new(9, 2_000);
    let mut s3 = s3d::S3d::start(&env.path("s3"));
    let root = format!("s3://{}/service", s3d::BUCKET);
    let objects = s3.objects("service");
    let run = |s3: &s3d::S3d| {
        let mut c = tidemark();
        c.envs(s3.env())
            .args(env.run_args(Path::new(&root)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    };
    let mut child = run(&s3).spawn().unwrap();
    let t0 = Instant::now();
    // Genesis and the first minute committed on S3.
    while count_files(&objects, "ckpt/commits") < 2 {
        if matches!(child.try_wait(), Ok(Some(_))) {
            panic!(
                "the service exited: {}",
                text(&child.wait_with_output().unwrap())
            );
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no commit on S3 after 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    s3.kill();
    // The second half (100 s of world time later) arrives while the store is down.
    let second = WorldConfig {
        events: 2_000,
        seed: 1_009,
        partitions: 4,
        bad_rate: 0.02,
        rate_per_sec: 20.0,
        start_ms: WorldConfig::default().start_ms + 101_000,
        ..Default::default()
    };
    produce_world(&env.conn, &second, false, None, &mut |_, _| {}).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    s3.restart();
    let reference = env.reference();
    let outs = decide_all_then_stop(
        &env,
        vec![child],
        &reference,
        // A liveness bound, not a speed check: generous, since other tests run beside this
        // one (the decisions take ~30 s alone, and were seen to take over 120 s beside a
        // decision oracle).
        Duration::from_secs(300),
        None,
        "S3",
    );
    assert!(
        text(&outs[0]).contains("object store request failed; retrying"),
        "the outage must have been retried and reported: {}",
        text(&outs[0])
    );
    let out = run(&s3).args(["--until", "latest"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("resumed from commit"), "{}", text(&out));
    assert_equals_reference(&env, &objects, &reference, "S3 with a store restart");
    let v = tidemark()
        .envs(s3.env())
        .args(["verify", "--data", &root])
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", text(&v));
    let replay_root = format!("s3://{}/replay", s3d::BUCKET);
    let r = tidemark()
        .envs(s3.env())
        .args(["replay", "--data", &root, "--out", &replay_root])
        .output()
        .unwrap();
    assert!(
        r.status.success() && text(&r).contains(": MATCH"),
        "{}",
        text(&r)
    );
}
