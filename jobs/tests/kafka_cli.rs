//! The `tidemark` binary over Kafka: clear errors for an unreachable broker and a missing
//! topic, the broker subcommand, and a timely cluster of 2 processes x 1 worker giving the same
//! primary truths as 1 process x 1 worker.

use std::path::Path;
use std::process::{Command, Output};

use tidemark_jobs::broker::{ensure_topics, free_port, LocalBroker, Storage};
use tidemark_jobs::config;
use tidemark_jobs::world::WorldConfig;

/// The CLI, its metrics endpoint on an ephemeral loopback port (tests run many at once).
fn tidemark() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tidemark"));
    c.env("TIDEMARK__WIRING__METRICS_ADDR", "127.0.0.1:0");
    c
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

fn expect_err(cmd: &mut Command, needle: &str) {
    let out = cmd.output().expect("spawn tidemark");
    let t = text(&out);
    assert!(!out.status.success(), "expected failure: {t}");
    assert!(!t.contains("panicked"), "panicked: {t}");
    assert!(t.contains(needle), "expected {needle:?} in: {t}");
}

fn expect_ok(cmd: &mut Command, needle: &str) {
    let out = cmd.output().expect("spawn tidemark");
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains(needle), "expected {needle:?} in: {t}");
}

fn broker(dir: &Path) -> LocalBroker {
    LocalBroker::start(
        0,
        Storage::Sqlite(dir.join("state")),
        &dir.join("broker.log"),
    )
    .unwrap_or_else(|e| panic!("cannot start the local broker: {e:#}"))
}

fn files(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            // Run progress (run records, commit points, the lease) is not primary truth.
            if rel.starts_with("runs") || rel.starts_with("ckpt") || rel == ".tidemark.lock" {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if rel.starts_with("gov") {
                // Governance facts record the wall-clock time of the act; the rest must agree.
                let mut v: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
                v["recorded_at"] = serde_json::Value::Null;
                out.push((rel, serde_json::to_vec(&v).unwrap()));
            } else {
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn unreachable_broker_and_missing_topic_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dead = format!("127.0.0.1:{}", free_port().unwrap());
    expect_err(
        tidemark()
            .args(["run", "--until", "latest", "--brokers", &dead, "--data"])
            .arg(tmp.path().join("d1")),
        "cannot reach the broker",
    );
    expect_err(
        tidemark().args([
            "world",
            "--to",
            "kafka",
            "--events",
            "10",
            "--brokers",
            &dead,
        ]),
        "cannot reach the broker",
    );
    // A live broker without the topics.
    let b = broker(tmp.path());
    expect_err(
        tidemark()
            .args(["run", "--until", "latest", "--brokers", &b.addr(), "--data"])
            .arg(tmp.path().join("d2")),
        "topic fp.bus.ingress.v1 does not exist",
    );
    // `broker topics` creates them; then a run over the empty topic succeeds with no records.
    expect_ok(
        tidemark().args(["broker", "topics", "--brokers", &b.addr()]),
        "fp.bus.decisions.v1: 4 partitions",
    );
    expect_ok(
        tidemark()
            .args(["run", "--until", "latest", "--brokers", &b.addr(), "--data"])
            .arg(tmp.path().join("d3")),
        "run: 0 ingress records",
    );
    // A client configured for SASL against a listener without it fails fast and says so,
    // instead of waiting without end (it used to hang in `broker topics`).
    let d4 = tmp.path().join("d4").display().to_string();
    let addr = b.addr();
    for args in [
        vec!["broker", "topics", "--brokers", &addr],
        vec![
            "world",
            "--to",
            "kafka",
            "--events",
            "10",
            "--brokers",
            &addr,
        ],
        vec![
            "run",
            "--until",
            "latest",
            "--brokers",
            &addr,
            "--data",
            &d4,
        ],
    ] {
        let t0 = std::time::Instant::now();
        expect_err(
            tidemark()
                .env("TIDEMARK_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
                .env("TIDEMARK_KAFKA_SASL_MECHANISM", "PLAIN")
                .env("TIDEMARK_KAFKA_SASL_USERNAME", "u")
                .env("TIDEMARK_KAFKA_SASL_PASSWORD", "p")
                .args(&args),
            "security.protocol=SASL_PLAINTEXT, sasl.mechanism=PLAIN",
        );
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(60),
            "{args:?}"
        );
    }
}

#[test]
fn two_processes_equal_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    let b = broker(tmp.path());
    let profile = config::load("local").unwrap();
    let conn = profile.kafka_conn(Some(&b.addr()));
    ensure_topics(&conn, &profile).unwrap();
    let cfg = WorldConfig {
        events: 15_000,
        seed: 11,
        bad_rate: 0.02,
        ..Default::default()
    };
    tidemark_jobs::kafka::produce_world(&conn, &cfg, false, None, &mut |_, _| {}).unwrap();

    let one = tmp.path().join("one");
    let out = tidemark()
        .args([
            "run",
            "--until",
            "latest",
            "--no-publish",
            "-w",
            "1",
            "--brokers",
            &b.addr(),
            "--data",
        ])
        .arg(&one)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));

    let hostfile = tmp.path().join("hosts");
    let ports = [free_port().unwrap(), free_port().unwrap()];
    std::fs::write(
        &hostfile,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", ports[0], ports[1]),
    )
    .unwrap();
    let two = tmp.path().join("two");
    let procs: Vec<_> = (0..2)
        .map(|p| {
            tidemark()
                .args([
                    "run",
                    "--until",
                    "latest",
                    "--no-publish",
                    "-w",
                    "1",
                    "-n",
                    "2",
                ])
                .args(["-p", &p.to_string(), "--hostfile"])
                .arg(&hostfile)
                .args(["--brokers", &b.addr(), "--data"])
                .arg(&two)
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in procs {
        let status = c.wait().unwrap();
        assert!(status.success(), "a cluster process failed: {status}");
    }
    let (a, b2) = (files(&one), files(&two));
    assert!(
        a.iter().any(|(p, _)| p.starts_with("dla/audit")),
        "no audit files"
    );
    let names = |v: &[(String, Vec<u8>)]| v.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&a),
        names(&b2),
        "file lists differ between 1x1 and 2x1"
    );
    for ((p, x), (_, y)) in a.iter().zip(&b2) {
        assert!(x == y, "{p} differs between 1 process and 2 processes");
    }
}
