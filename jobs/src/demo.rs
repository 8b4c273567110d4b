//! The commands behind the CLI that compose several stages: writing a world, verifying, the
//! summary tables, and the demo (local broker → live world → online run over Kafka → verify →
//! replay → MATCH).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use tidemark_sinks::{Root, WriteOnceStore};
use tidemark_sources::{KafkaEnd, KafkaSource, KafkaStart};

use crate::broker::{ensure_topics, topics, LocalBroker, Storage};
use crate::config::{self, Profile};
use crate::kafka::{produce_world, read_topic, world_counts};
use crate::publish::DecisionMessage;
use crate::replay::{read_audit, replay, ReplayOutcome};
use crate::run::{run, run_with, Ingress, RunOptions, RunOutcome};
use crate::verify::verify;
use crate::world::{generate, FileLogSink, WorldConfig};
use tidemark_operators::decision::Decision;
use tidemark_operators::time::millis;

/// Writes the world `cfg` as a file log in `out` with `truth.csv` and `world.json`.
pub fn world_to_file(cfg: &WorldConfig, out: &Path) -> Result<()> {
    let t0 = Instant::now();
    let mut sink = FileLogSink::create(out, cfg.partitions)
        .with_context(|| format!("cannot create world in {}", out.display()))?;
    let mut truth = std::io::BufWriter::new(std::fs::File::create(out.join("truth.csv"))?);
    writeln!(truth, "event_id,pattern")?;
    let mut err = None;
    let stats = generate(cfg, &mut sink, &mut |id, p| {
        if let Err(e) = writeln!(truth, "{id},{}", p.as_str()) {
            err = Some(e);
        }
    })?;
    if let Some(e) = err {
        return Err(e.into());
    }
    truth.flush()?;
    std::fs::write(
        out.join("world.json"),
        serde_json::to_vec_pretty(&(cfg, &stats))?,
    )?;
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "world: {} records ({} txns, {} fraud txns, {} labels, {} postures) in {} partitions -> {} ({:.0} records/s)",
        stats.records, stats.txns, stats.fraud_txns, stats.labels, stats.postures, cfg.partitions, out.display(),
        stats.records as f64 / secs.max(1e-9)
    );
    Ok(())
}

/// Verifies the archive under `data` against its manifests; prints the report.
pub fn verify_cmd(data: &Root) -> Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    if data.local_dir().is_some_and(|d| !d.is_dir()) {
        bail!("data directory {data} does not exist");
    }
    let store = WriteOnceStore::open(data, rt.handle().clone())?;
    let report = verify(&store)?;
    if report.ok() {
        println!(
            "verify: OK — {} manifest(s), {} files, {} archive rows, {} receipts",
            report.manifests, report.files, report.archive_rows, report.receipts
        );
        Ok(())
    } else {
        for p in &report.problems {
            eprintln!("verify: {p}");
        }
        bail!("verify failed: {} problem(s)", report.problems.len())
    }
}

/// Parses a logical time: epoch ms or RFC 3339.
pub fn parse_time(s: &str) -> Result<u64> {
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(ms);
    }
    tidemark_dataflows::envelope::parse_rfc3339_millis(s)
        .ok_or_else(|| anyhow::anyhow!("not a time (ms or RFC 3339): {s}"))
}

/// Prints a replay outcome.
pub fn print_replay(r: &ReplayOutcome) {
    println!(
        "replay: {} decisions {:?}, {} snapshots in {:.2}s; compared {} decisions: {}",
        r.decisions.values().sum::<u64>(),
        r.decisions,
        r.snapshots,
        r.wall_secs,
        r.compared,
        match &r.divergence {
            None => "MATCH".to_owned(),
            Some(d) => format!("DIVERGED: {d}"),
        }
    );
}

/// Prints quarantine by reason and the confusion matrix of decisions vs. the world's truth.
pub fn summary(data: &Path, truth_csv: &Path) -> Result<()> {
    use std::collections::{BTreeMap, BTreeSet};
    let rt = tokio::runtime::Runtime::new()?;
    let store = WriteOnceStore::local(data, rt.handle().clone())?;
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    for p in store.list("ig/receipts")? {
        for r in tidemark_sinks::parquet::decode_receipts(store.get(&p)?, &p)? {
            if let Some(code) = r.reason {
                *reasons.entry(code.as_str().to_owned()).or_default() += 1;
            }
        }
    }
    println!("quarantine/duplicates by reason: {reasons:?}");
    let truth: BTreeSet<String> = std::fs::read_to_string(truth_csv)?
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').next().map(str::to_owned))
        .collect();
    let mut matrix: BTreeMap<(&str, Decision), u64> = BTreeMap::new();
    for r in read_audit(&store)?.into_values().flatten() {
        let label = if truth.contains(&r.event_id) {
            "fraud"
        } else {
            "legit"
        };
        *matrix.entry((label, r.decision)).or_default() += 1;
    }
    println!("confusion matrix (truth x decision):");
    for label in ["fraud", "legit"] {
        let row: Vec<String> = Decision::ALL
            .iter()
            .map(|d| format!("{d}={}", matrix.get(&(label, *d)).copied().unwrap_or(0)))
            .collect();
        println!("  {label:<5} {}", row.join(" "));
    }
    Ok(())
}

/// Prints a run's decision latency percentiles: the engine's own, then end to end.
fn print_latency(out: &RunOutcome) {
    if let Some((n, p50, p95, p99, max)) = out.engine_latency {
        let ms = |us: u64| us as f64 / 1000.0;
        println!(
            "latency, engine (record polled → decision handed to the producer), {n} decisions: p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            ms(p50), ms(p95), ms(p99), ms(max)
        );
    }
    if let Some((n, p50, p95, p99, max)) = out.latency {
        println!(
            "latency, end to end (ingress record timestamp → decision handed to the producer), {n} decisions: p50 {p50} ms, p95 {p95} ms, p99 {p99} ms, max {max} ms"
        );
    }
}

/// Prints a run outcome.
pub fn print_run(out: &RunOutcome) {
    if let Some(from) = out.resumed_from {
        println!("run: resumed from commit {from}");
    }
    let Some(m) = &out.manifest else {
        println!(
            "run: stopped after {:.2}s; last commit {}; decisions this run {:?}; run record {}",
            out.wall_secs,
            out.last_commit.map_or("none".to_owned(), |c| c.to_string()),
            out.decisions,
            out.run_record
        );
        if out.published > 0 || out.skipped > 0 {
            println!(
                "published: {} records ({} already on their topics, not sent again)",
                out.published, out.skipped
            );
        }
        print_latency(out);
        return;
    };
    let ingress = m.totals.total();
    println!(
        "run: {} ingress records in {:.2}s ({:.0} records/s) — admitted {}, quarantined {}, duplicate {}",
        ingress, out.wall_secs, ingress as f64 / out.wall_secs.max(1e-9),
        m.totals.admitted, m.totals.quarantined, m.totals.duplicate
    );
    println!(
        "run: policy_rev {} basis {} — {} files; run record {}",
        m.policy_rev,
        m.basis_id,
        m.files.len(),
        out.run_record
    );
    print_latency(out);
    if out.published > 0 || out.skipped > 0 {
        println!(
            "published: {} records to the output topics ({} already there, not sent again)",
            out.published, out.skipped
        );
    }
}

/// The file-log demo: world → run → verify → summary → replay.
pub fn file_demo(events: u64, workers: usize, root: &Path, profile: &str) -> Result<()> {
    let world = root.join("ingress");
    let data = root.join("data");
    let cfg = WorldConfig {
        events,
        // Labels, reversals and episodes unfold within the few simulated minutes of the world.
        follow_up_scale: 0.05,
        fraud_rate: 0.005,
        ..Default::default()
    };
    world_to_file(&cfg, &world)?;
    let p = config::load(profile)?;
    let out = run(&p, &Ingress::File(world.clone()), &data, workers)?;
    print_run(&out);
    check_and_replay(&p, &data, &world.join("truth.csv"), root, workers)
}

/// The demos' common tail: verify the archive, print the summary, replay into `root/replay`
/// and fail unless it MATCHes.
fn check_and_replay(
    profile: &Profile,
    data: &Path,
    truth_csv: &Path,
    root: &Path,
    workers: usize,
) -> Result<()> {
    verify_cmd(&Root::from(data))?;
    summary(data, truth_csv)?;
    let r = replay(profile, data, root.join("replay"), 0, None, workers)?;
    print_replay(&r);
    if r.divergence.is_some() {
        bail!("replay diverged from the online run");
    }
    demo_dataset(profile, data, workers)
}

/// The demos' last step: a training dataset of everything the run decided (labels as known at
/// its end, a time split half-way), checked row by row against the online audit, and the
/// root's governance facts.
fn demo_dataset(profile: &Profile, data: &Path, workers: usize) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let store = crate::dataset::open_store(data, &rt)?;
    let Some((lo, hi)) = crate::dataset::archive_range(&store)? else {
        bail!("the archive is empty: no dataset to build");
    };
    let req = crate::dataset::DatasetRequest {
        from: lo,
        to: hi + 1,
        labels_as_of: hi,
        split_at: Some(lo + (hi - lo) / 2),
        workers,
    };
    let target = crate::dataset::Target {
        root: store.clone(),
        dir: None,
    };
    let built = crate::dataset::build(profile, &store, &target, &req)?;
    crate::dataset::cli::print_built(&built, &Root::from(data));
    match &built.manifest.certificate {
        Some(c) if c.mismatches == 0 => {}
        Some(c) => bail!("the dataset differs from the online audit: {}", c.summary()),
        None => bail!("no online audit to check the dataset against"),
    }
    for (path, f) in crate::gov::list(&store)? {
        println!(
            "gov: {} {} {} ({path})",
            f.recorded_at,
            f.kind.as_str(),
            f.subject
        );
    }
    Ok(())
}

/// The Kafka demo: starts tansu on a free loopback port, creates the topics, produces a live
/// world at `rate` records/s while the continuous online run (`run --until none`, its own
/// process) consumes it; stops that run with SIGTERM half-way, resumes it (bounded at the
/// world's end offsets, which seals the root), then verifies, prints the summary and latency
/// percentiles, replays from the archive, and checks the decisions read back from
/// `fp.bus.decisions.v1` (each exactly once) against the replay.
pub fn kafka_demo(
    events: u64,
    rate: f64,
    workers: usize,
    root: &Path,
    profile: &str,
) -> Result<()> {
    std::fs::create_dir_all(root)?;
    let data = root.join("data");
    let profile_arg = profile;
    let profile = config::load(profile)?;
    let broker = LocalBroker::start(
        0,
        Storage::Sqlite(root.join("broker")),
        &root.join("broker.log"),
    )?;
    println!(
        "broker: tansu on {} (log {})",
        broker.addr(),
        root.join("broker.log").display()
    );
    let conn = profile.kafka_conn(Some(&broker.addr()));
    ensure_topics(&conn, &profile)?;
    // Phase 1: the continuous service (`run --until none`) in its own process while the world
    // streams in, stopped with SIGTERM half-way.
    let exe = std::env::current_exe().context("cannot find the tidemark binary")?;
    let metrics_addr = format!("127.0.0.1:{}", crate::broker::free_port()?);
    let mut child = std::process::Command::new(exe)
        .env("TIDEMARK__WIRING__METRICS_ADDR", &metrics_addr)
        .args(["run", "--until", "none", "-w", &workers.to_string()])
        .args(["--profile", profile_arg, "--brokers", &conn.brokers])
        .arg("--data")
        .arg(&data)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot start the online run")?;
    // The world starts once the run polls its partitions, as a live stream meets a running
    // service: a world sent while the process is still starting is a backlog, and catching up
    // on it is not the latency of a running service.
    let t0 = Instant::now();
    loop {
        if child.try_wait()?.is_some() {
            bail!("the online run exited while starting");
        }
        let starting = crate::metrics::get(&metrics_addr, "/readyz")
            .map_or(true, |(_, body)| body.contains("starting"));
        if !starting {
            break;
        }
        if t0.elapsed() > std::time::Duration::from_secs(120) {
            bail!("the online run did not start polling within 2 minutes");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Then the same settling time the latency benchmark gives a started run: records sent to
    // consumers assigned less than ~3 s earlier reached the run ~0.6 s late on this machine
    // (librdkafka debug logs show the first fetch of a partition's first records coming late;
    // the cause is not found yet, docs/operations.md).
    std::thread::sleep(std::time::Duration::from_secs(3));
    let cfg = WorldConfig {
        events,
        partitions: profile.wiring.ingress_partitions,
        start_ms: crate::kafka::live_start_ms(),
        rate_per_sec: rate,
        jitter_ms: 0,
        follow_up_scale: 0.01,
        // Live episodes are rare in a short run: start more of them.
        fraud_rate: 0.005,
        // Stragglers within the profile's allowed lateness: only injected LATE_EVENTs are late.
        straggler_ms: millis(profile.ig.allowed_lateness),
        ..Default::default()
    };
    let ends = world_counts(&cfg)?;
    let truth_csv = root.join("truth.csv");
    let producer = {
        let (conn, cfg, truth_csv) = (conn.clone(), cfg.clone(), truth_csv.clone());
        std::thread::spawn(move || -> Result<()> {
            let mut truth = std::io::BufWriter::new(std::fs::File::create(&truth_csv)?);
            writeln!(truth, "event_id,pattern")?;
            let t0 = Instant::now();
            let stats = produce_world(&conn, &cfg, true, None, &mut |id, p| {
                let _ = writeln!(truth, "{id},{}", p.as_str());
            })?;
            truth.flush()?;
            println!(
                "world: {} live records at {:.0} records/s into {}",
                stats.records,
                stats.records as f64 / t0.elapsed().as_secs_f64().max(1e-9),
                topics::INGRESS
            );
            Ok(())
        })
    };
    let total: u64 = ends.values().sum();
    let probe = KafkaSource::new(
        conn.clone(),
        topics::INGRESS,
        KafkaStart::Beginning,
        KafkaEnd::Latest,
    );
    loop {
        let sent: u64 = probe.high_watermarks()?.values().sum();
        if sent * 2 >= total || child.try_wait()?.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    show_metrics(&metrics_addr);
    println!(
        "demo: SIGTERM to the online run (pid {}) with half the world sent",
        child.id()
    );
    // SAFETY: signalling our own child process.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let stopped = child.wait_with_output()?;
    for line in String::from_utf8_lossy(&stopped.stdout).lines() {
        println!("  {line}");
    }
    if !stopped.status.success() {
        bail!("the online run did not stop cleanly: {}", stopped.status);
    }
    // Phase 2: the same command resumes from the last commit by itself, here bounded at the
    // world's end so the demo can seal the root and compare.
    let ingress = Ingress::Kafka {
        conn: conn.clone(),
        topic: topics::INGRESS.to_owned(),
        start: KafkaStart::Beginning,
        end: KafkaEnd::Offsets(ends),
    };
    let opts = RunOptions {
        publish: Some(conn.clone()),
        ..RunOptions::threads(workers)
    };
    let out = run_with(&profile, &ingress, &data, &opts)?
        .context("a single-process run returns its outcome")?;
    println!(
        "demo: decisions wait for the frontier: latency >= allowed_lateness ({}) by design (SPEC §3)",
        humantime::format_duration(profile.ig.allowed_lateness)
    );
    producer
        .join()
        .map_err(|_| anyhow::anyhow!("the producer thread panicked"))??;
    println!(
        "demo: the live figures are the first run's (above); the resumed run's latency below includes re-reading everything since the last commit"
    );
    print_run(&out);
    check_and_replay(&profile, &data, &truth_csv, root, workers)?;
    let topic = decisions_from_topic(&conn)?;
    let mut ids: Vec<&str> = topic.iter().map(|a| a.decision_id.as_str()).collect();
    ids.dedup();
    if ids.len() != topic.len() {
        bail!("{} holds a decision twice", topics::DECISIONS);
    }
    let replayed = audit_rows(&root.join("replay"))?;
    if topic != replayed {
        bail!(
            "{} holds {} decisions that differ from the replay's {}",
            topics::DECISIONS,
            topic.len(),
            replayed.len()
        );
    }
    println!(
        "decisions topic: {} decisions read back from {}, each exactly once, equal to the replay: MATCH",
        topic.len(),
        topics::DECISIONS
    );
    drop(broker);
    Ok(())
}

/// The decision messages of `fp.bus.decisions.v1`, sorted like audit rows.
pub fn decisions_from_topic(
    conn: &tidemark_sources::KafkaConn,
) -> Result<Vec<tidemark_operators::decision::AuditRecord>> {
    let mut out = Vec::new();
    for rec in read_topic(conn, topics::DECISIONS)? {
        match serde_json::from_slice::<DecisionMessage>(&rec.bytes) {
            Ok(DecisionMessage::Decision(a)) => out.push(*a),
            Ok(DecisionMessage::Intent { .. }) => {}
            Err(e) => bail!(
                "undecodable message at {}/{}: {e}",
                rec.coord.partition,
                rec.coord.offset
            ),
        }
    }
    out.sort();
    Ok(out)
}

/// Every audit row under `root/dla/audit`, sorted.
pub fn audit_rows(root: &Path) -> Result<Vec<tidemark_operators::decision::AuditRecord>> {
    let rt = tokio::runtime::Runtime::new()?;
    let store = WriteOnceStore::local(root, rt.handle().clone())?;
    let mut out: Vec<_> = read_audit(&store)?.into_values().flatten().collect();
    out.sort();
    Ok(out)
}

/// A directory for the demo: `dir`, or a temporary one kept alive by the returned guard.
pub fn demo_root(dir: Option<PathBuf>) -> Result<(PathBuf, Option<tempfile::TempDir>)> {
    match dir {
        Some(d) => Ok((d, None)),
        None => {
            let t = tempfile::tempdir()?;
            Ok((t.path().to_path_buf(), Some(t)))
        }
    }
}

/// Prints what an operator's scraper sees of the live run: readiness and a few metrics.
fn show_metrics(addr: &str) {
    use crate::metrics::{get, sample};
    let (Ok((code, ready)), Ok((_, text))) = (get(addr, "/readyz"), get(addr, "/metrics")) else {
        println!("demo: the run's metrics endpoint http://{addr} did not answer");
        return;
    };
    let first = ready.lines().next().unwrap_or_default();
    println!("demo: GET http://{addr}/readyz -> {code} {first}");
    for (name, labels) in [
        (
            "tidemark_ingress_records_total",
            r#"status="ADMITTED",reason="""#,
        ),
        ("tidemark_decisions_total", r#"decision="ALLOW""#),
        ("tidemark_ingress_consumer_lag", r#"partition="0""#),
        ("tidemark_decision_latency_seconds_count", ""),
    ] {
        if let Some(v) = sample(&text, name, labels) {
            let labels = if labels.is_empty() {
                String::new()
            } else {
                format!("{{{labels}}}")
            };
            println!("demo:   {name}{labels} {v}");
        }
    }
}
