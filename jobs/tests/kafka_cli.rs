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

/// SCRAM against tansu with `--authentication`: the settings typed in the profile's
/// `wiring.kafka` (here through `TIDEMARK__WIRING__KAFKA__…`), the password only from
/// `TIDEMARK_KAFKA_SASL_PASSWORD`. The credentials are created through the broker's
/// AlterUserScramCredentials API (kafka-python) before authentication is switched on (tansu
/// keeps them in its SQLite storage). Anonymous clients are refused; SCRAM-SHA-256 and -512
/// clients create topics, produce a world and run over it; a wrong password fails fast, names
/// the settings and never echoes the password.
#[test]
fn scram_authentication_against_tansu() {
    const PASSWORD: &str = "scram-Pa55-word-7Qx";
    let tmp = tempfile::tempdir().unwrap();
    let mut b = broker(tmp.path());
    let addr = b.addr();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/python/kafka_client.py"
    );
    let out = Command::new("python3")
        .args([script, "scram", &addr, "tidemark"])
        .env("TIDEMARK_KAFKA_SASL_PASSWORD", PASSWORD)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success() && text(&out).contains(r#""errors": {}"#),
        "kafka_client.py scram (is kafka-python installed? scripts/test.sh installs it): {}",
        text(&out)
    );
    b.set_authentication(true);
    b.restart().unwrap();
    let with = |mechanism: &str, password: &str| {
        let mut c = tidemark();
        c.env(
            "TIDEMARK__WIRING__KAFKA__SECURITY_PROTOCOL",
            "SASL_PLAINTEXT",
        )
        .env("TIDEMARK__WIRING__KAFKA__SASL_MECHANISM", mechanism)
        .env("TIDEMARK__WIRING__KAFKA__SASL_USERNAME", "tidemark")
        .env("TIDEMARK_KAFKA_SASL_PASSWORD", password);
        c
    };
    // The broker really requires authentication.
    expect_err(
        tidemark().args(["broker", "topics", "--brokers", &addr]),
        "cannot reach the broker",
    );
    expect_ok(
        with("SCRAM-SHA-256", PASSWORD).args(["broker", "topics", "--brokers", &addr]),
        "",
    );
    expect_ok(
        with("SCRAM-SHA-512", PASSWORD).args([
            "world",
            "--to",
            "kafka",
            "--events",
            "500",
            "--brokers",
            &addr,
        ]),
        "",
    );
    let data = tmp.path().join("data").display().to_string();
    expect_ok(
        with("SCRAM-SHA-256", PASSWORD).args([
            "run",
            "--until",
            "latest",
            "--brokers",
            &addr,
            "--data",
            &data,
        ]),
        "run: 500 ingress records",
    );
    let t0 = std::time::Instant::now();
    let wrong = "not-the-password-3Kd";
    let out = with("SCRAM-SHA-512", wrong)
        .args(["broker", "topics", "--brokers", &addr])
        .output()
        .unwrap();
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("security.protocol=SASL_PLAINTEXT, sasl.mechanism=SCRAM-SHA-512"),
        "{t}"
    );
    assert!(!t.contains(wrong) && !t.contains(PASSWORD), "{t}");
    assert!(t0.elapsed() < std::time::Duration::from_secs(60));
    // SASL_SSL through a TLS-terminating proxy (tansu 0.6 has no TLS listener) that the
    // broker advertises: the brokers' certificate checked against `ssl_ca_location`.
    let proxy_port = free_port().unwrap();
    let certs = tmp.path().join("certs");
    let proxy_script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/python/tls_proxy.py");
    let mut proxy = Command::new("python3")
        .arg(proxy_script)
        .arg(&certs)
        .args([
            proxy_port.to_string(),
            b.addr().rsplit(':').next().unwrap().to_owned(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(proxy.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let _proxy = Kill(proxy);
    assert_eq!(
        line.trim(),
        "ready",
        "tls_proxy.py (needs the cryptography package)"
    );
    let tls_addr = format!("127.0.0.1:{proxy_port}");
    b.set_advertised(Some(tls_addr.clone()));
    b.restart().unwrap();
    let tls = |ca: Option<&Path>| {
        let mut c = with("SCRAM-SHA-512", PASSWORD);
        c.env("TIDEMARK__WIRING__KAFKA__SECURITY_PROTOCOL", "SASL_SSL");
        if let Some(ca) = ca {
            c.env("TIDEMARK__WIRING__KAFKA__SSL_CA_LOCATION", ca);
        }
        c
    };
    let ca = certs.join("ca.pem");
    expect_ok(
        tls(Some(&ca)).args(["broker", "topics", "--brokers", &tls_addr]),
        "",
    );
    expect_ok(
        tls(Some(&ca)).args([
            "world",
            "--to",
            "kafka",
            "--events",
            "200",
            "--seed",
            "8",
            "--brokers",
            &tls_addr,
        ]),
        "",
    );
    let data = tmp.path().join("data-tls").display().to_string();
    expect_ok(
        tls(Some(&ca)).args([
            "run",
            "--until",
            "latest",
            "--brokers",
            &tls_addr,
            "--data",
            &data,
        ]),
        "run: 700 ingress records",
    );
    // A certificate from an unknown CA is refused, fast and clearly.
    let t0 = std::time::Instant::now();
    expect_err(
        tls(None).args(["broker", "topics", "--brokers", &tls_addr]),
        "security.protocol=SASL_SSL, sasl.mechanism=SCRAM-SHA-512",
    );
    assert!(t0.elapsed() < std::time::Duration::from_secs(60));
    // An incomplete setting is refused before any connection.
    let out = tidemark()
        .env("TIDEMARK__WIRING__KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
        .args(["broker", "topics", "--brokers", &addr])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("needs sasl_mechanism and sasl_username"),
        "{}",
        text(&out)
    );
}
