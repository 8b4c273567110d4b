//! Operating the service: the `tidemark` binary running `run --until none` against a real
//! tansu broker serves Prometheus metrics and health. Scraped while it runs, the counters
//! agree with the receipts and the audit log written to the data root; `/readyz` turns red
//! (503) when the broker stops.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tidemark_jobs::broker::{ensure_topics, free_port, LocalBroker, Storage};
use tidemark_jobs::config;
use tidemark_jobs::kafka::produce_world;
use tidemark_jobs::metrics::{get, sample};
use tidemark_jobs::world::WorldConfig;

const PROFILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/profiles/service.toml"
);

fn tidemark() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tidemark"))
}

/// A tansu broker with SQLite storage under `dir`.
fn broker(dir: &Path) -> LocalBroker {
    LocalBroker::start(
        0,
        Storage::Sqlite(dir.join("broker")),
        &dir.join("broker.log"),
    )
    .unwrap_or_else(|e| panic!("cannot start the local broker: {e:#}"))
}

fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// SIGTERM, then SIGKILL after 10 s (a run whose broker is gone may wait for it); returns
/// the run's stderr.
fn stop(mut child: Child) -> String {
    // SAFETY: signalling our own child process.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let t0 = Instant::now();
    while child.try_wait().ok().flatten().is_none() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout)
}

/// Counts by the Prometheus label text of receipts on disk.
fn receipt_counts(data: &Path) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for path in walk(&data.join("ig/receipts")) {
        let bytes = std::fs::read(&path).unwrap();
        let name = path.display().to_string();
        for r in tidemark_sinks::parquet::decode_receipts(bytes.into(), &name).unwrap() {
            let key = format!(
                r#"status="{}",reason="{}""#,
                r.status.as_str(),
                r.reason.map_or("", |c| c.as_str())
            );
            *out.entry(key).or_default() += 1.0;
        }
    }
    out
}

#[test]
fn scraped_metrics_agree_with_receipts_and_audit_and_readyz_turns_red_without_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = broker(dir.path());
    let profile = config::load(PROFILE).unwrap();
    let conn = profile.kafka_conn(Some(&broker.addr()));
    ensure_topics(&conn, &profile).unwrap();
    let world = WorldConfig {
        events: 3_000,
        seed: 31,
        partitions: 4,
        bad_rate: 0.05,
        rate_per_sec: 20.0,
        ..Default::default()
    };
    produce_world(&conn, &world, false, None, &mut |_, _| {}).unwrap();

    let data = dir.path().join("data");
    let addr = format!("127.0.0.1:{}", free_port().unwrap());
    let child = tidemark()
        .env("TIDEMARK__WIRING__METRICS_ADDR", &addr)
        .args([
            "run",
            "--profile",
            PROFILE,
            "--brokers",
            &conn.brokers,
            "--until",
            "none",
        ])
        .arg("--data")
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("/healthz", Duration::from_secs(60), || {
        get(&addr, "/healthz").ok().filter(|(c, _)| *c == 200)
    });
    // Everything read, and decisions no longer moving (the idle partitions released the
    // frontier past the last record).
    let mut last = -1.0;
    let text = wait_for("every record counted", Duration::from_secs(120), || {
        let (_, text) = get(&addr, "/metrics").ok()?;
        let records: f64 = text
            .lines()
            .filter(|l| l.starts_with("tidemark_ingress_records_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        let decided = sample(&text, "tidemark_decision_latency_seconds_count", "")?;
        let stable = decided == last;
        last = decided;
        (records == world.events as f64 && decided > 0.0 && stable).then_some(text)
    });
    for p in 0..4 {
        let part = format!(r#"partition="{p}""#);
        assert_eq!(
            sample(&text, "tidemark_ingress_consumer_lag", &part),
            Some(0.0),
            "{p}"
        );
        assert!(sample(&text, "tidemark_ingress_watermark_age_seconds", &part).is_some());
        assert!(sample(&text, "tidemark_ingress_position", &part).is_some_and(|v| v > 0.0));
    }
    assert!(sample(&text, "tidemark_worker_frontier_ms", r#"worker="0""#).is_some_and(|v| v > 0.0));
    assert!(sample(&text, "tidemark_published_records_total", "").is_some_and(|v| v > 0.0));
    assert_eq!(
        sample(&text, "tidemark_publish_errors_total", ""),
        Some(0.0)
    );
    assert!(
        sample(&text, "tidemark_files_written_total", r#"kind="archive""#).is_some_and(|v| v > 0.0)
    );
    assert!(sample(&text, "tidemark_last_commit_age_seconds", "").is_some());
    let (code, ready) = get(&addr, "/readyz").unwrap();
    assert_eq!(code, 200, "{ready}");
    // A historic world: its watermarks are months behind the wall clock.
    assert!(
        ready.starts_with("yellow") && ready.contains("watermark"),
        "{ready}"
    );
    assert_eq!(
        sample(&text, "tidemark_ready", r#"state="yellow""#),
        Some(1.0)
    );

    // The broker goes away: readiness turns red with the reason.
    broker.stop().unwrap();
    let (code, body) = wait_for("/readyz red", Duration::from_secs(60), || {
        get(&addr, "/readyz")
            .ok()
            .filter(|(_, b)| b.starts_with("red"))
    });
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("broker unreachable"), "{body}");
    let log = stop(child);
    assert!(log.contains("run: metrics on http://"), "{log}");

    // Back with the broker, a bounded catch-up seals the root: the counters scraped from the
    // live run equal what is on disk.
    broker.restart().unwrap();
    let out = tidemark()
        .env("TIDEMARK__WIRING__METRICS_ADDR", "")
        .args([
            "run",
            "--profile",
            PROFILE,
            "--brokers",
            &conn.brokers,
            "--until",
            "latest",
        ])
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let on_disk = receipt_counts(&data);
    for (labels, n) in &on_disk {
        assert_eq!(
            sample(&text, "tidemark_ingress_records_total", labels),
            Some(*n),
            "{labels}"
        );
    }
    assert_eq!(on_disk.values().sum::<f64>(), world.events as f64);
    let audit = tidemark_jobs::demo::audit_rows(&data).unwrap();
    let mut by_decision: BTreeMap<String, f64> = BTreeMap::new();
    for a in &audit {
        *by_decision.entry(a.decision.to_string()).or_default() += 1.0;
    }
    for (d, n) in &by_decision {
        let labels = format!(r#"decision="{d}""#);
        assert_eq!(
            sample(&text, "tidemark_decisions_total", &labels),
            Some(*n),
            "{d}"
        );
    }
    assert_eq!(
        sample(&text, "tidemark_decision_latency_seconds_count", ""),
        Some(audit.len() as f64)
    );
}

fn walk(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Structured logs: `--log-format json` with `RUST_LOG=tidemark=debug` writes one JSON line per
/// decision and per record not admitted, with correlation ids, and per file and commit; the
/// producer keys set in the environment appear in no log line, output, run record or file.
#[test]
fn json_logs_carry_correlation_ids_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path());
    // The service profile with producer signatures required, one key per producer.
    let mut text = std::fs::read_to_string(PROFILE).unwrap();
    let base = config::load(PROFILE).unwrap();
    text.push_str("\n[ig.signing]\nrequired = true\n[ig.signing.keys]\n");
    let mut secrets = Vec::new();
    for producer in base.ig.producers.values().flatten() {
        text.push_str(&format!("\"{producer}-1\" = \"{producer}\"\n"));
        let var = tidemark_dataflows::ig::signing::key_env_var(&format!("{producer}-1"));
        secrets.push((
            var,
            format!("{producer}-very-secret-key-material-0123456789"),
        ));
    }
    let profile_path = dir.path().join("signed.toml");
    std::fs::write(&profile_path, &text).unwrap();
    let profile = config::load(profile_path.to_str().unwrap()).unwrap();
    let conn = profile.kafka_conn(Some(&broker.addr()));
    ensure_topics(&conn, &profile).unwrap();
    let keys = tidemark_dataflows::ig::Keyring::load(&profile.ig.signing, |v| {
        secrets.iter().find(|(k, _)| k == v).map(|(_, s)| s.clone())
    })
    .unwrap();
    let world = WorldConfig {
        events: 2_000,
        seed: 5,
        partitions: 4,
        bad_rate: 0.05,
        rate_per_sec: 20.0,
        ..Default::default()
    };
    produce_world(
        &conn,
        &world,
        false,
        Some(std::sync::Arc::new(keys)),
        &mut |_, _| {},
    )
    .unwrap();

    let data = dir.path().join("data");
    let mut cmd = tidemark();
    cmd.env("TIDEMARK__WIRING__METRICS_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "tidemark=debug")
        .args([
            "--log-format",
            "json",
            "run",
            "--until",
            "latest",
            "--brokers",
            &conn.brokers,
        ])
        .arg("--profile")
        .arg(&profile_path)
        .arg("--data")
        .arg(&data);
    for (k, v) in &secrets {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let with_message = |m: &str| -> Vec<&serde_json::Value> {
        lines.iter().filter(|v| v["message"] == m).collect()
    };
    let decisions = with_message("decision");
    let audit = tidemark_jobs::demo::audit_rows(&data).unwrap();
    assert_eq!(decisions.len(), audit.len());
    for d in &decisions {
        for field in [
            "event_id",
            "decision_id",
            "trace_id",
            "partition",
            "offset",
            "decision",
        ] {
            assert!(!d[field].is_null(), "{field}: {d}");
        }
        assert_eq!(d["level"], "DEBUG");
    }
    let rejected = with_message("not admitted");
    let on_disk = receipt_counts(&data);
    let not_admitted: f64 = on_disk
        .iter()
        .filter(|(k, _)| !k.starts_with(r#"status="ADMITTED""#))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(rejected.len() as f64, not_admitted);
    assert!(rejected
        .iter()
        .all(|r| !r["reason"].is_null() && !r["offset"].is_null()));
    assert!(!with_message("file written").is_empty());
    // A bounded run seals the root with its manifest (commit points come with the frontier).
    assert_eq!(with_message("manifest written").len(), 1);
    // Signed producers were admitted: only the world's keyless producers are BAD_SIGNATURE.
    assert!(
        on_disk[r#"status="ADMITTED",reason="""#] > 1_500.0,
        "{on_disk:?}"
    );

    // No key material anywhere: stderr, stdout, run record, files.
    let stdout = String::from_utf8_lossy(&out.stdout);
    for (_, secret) in &secrets {
        assert!(!stderr.contains(secret.as_str()) && !stdout.contains(secret.as_str()));
        for path in walk(&data) {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} holds a key",
                path.display()
            );
        }
    }
}
