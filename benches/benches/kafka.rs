//! Over the local tansu broker: a bare rdkafka consumer's rate on the ingress topic against the
//! pipeline's rate from the same topic (same run, target ratio >= 0.5), then decision latency
//! percentiles (ingress record timestamp → decision published, hdrhistogram) at a fixed offered
//! load of half the pipeline's sustainable rate, with the `lowlatency` profile
//! (allowed_lateness 0), both the engine's own (record polled → decision handed to the
//! producer) and end to end. The broker's own CPU is reported beside ours: it shares the 2 cores.
//! `TIDEMARK_BENCH_EVENTS` overrides the world size (default 200k).
//! `TIDEMARK_BENCH_OFFERED=R` skips the throughput part and probes latency at R records/s;
//! librdkafka properties can be varied through `TIDEMARK_KAFKA_<PROPERTY>` (as for `run`).

use std::time::{Duration, Instant};

use tidemark_benches::measure;
use tidemark_jobs::broker::{ensure_topics, topics, LocalBroker, Storage};
use tidemark_jobs::config::load;
use tidemark_jobs::kafka::{produce_world, read_topic};
use tidemark_jobs::run::{run_with, Ingress, RunOptions};
use tidemark_jobs::world::WorldConfig;
use tidemark_sources::{KafkaEnd, KafkaStart};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// utime + stime of another process, from /proc.
fn proc_cpu(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf has no side effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis((ticks(11) + ticks(12)) * 1000 / hz)
}

fn main() -> anyhow::Result<()> {
    tidemark_jobs::tune_memory();
    // Warnings (and `TIDEMARK__WIRING__SLOW_ACTIVATION` lines) on stderr, as the CLI logs them.
    tracing_subscriber::fmt()
        .with_env_filter(tidemark_jobs::log_filter())
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let events: u64 = tidemark_benches::env_or("TIDEMARK_BENCH_EVENTS", 200_000);
    let tmp = tempfile::tempdir()?;
    // TIDEMARK_BENCH_STORAGE=memory runs tansu's memory engine instead (faster, but it lost
    // acknowledged records in our demo runs: see docs/kafka.md).
    let storage = match std::env::var("TIDEMARK_BENCH_STORAGE").as_deref() {
        Ok("memory") => Storage::Memory,
        _ => Storage::Sqlite(tmp.path().join("state")),
    };
    let broker = LocalBroker::start(0, storage, &tmp.path().join("broker.log"))?;
    let pid = broker.pid().unwrap_or(0);
    let profile = load("local")?;
    let conn = profile.kafka_conn(Some(&broker.addr()));
    ensure_topics(&conn, &profile)?;
    if let Ok(offered) = std::env::var("TIDEMARK_BENCH_OFFERED") {
        let offered: f64 = offered.parse()?;
        bare_round_trip(&conn, 2_000, 500.0)?;
        live_latency(&broker.addr(), "lowlatency", 99, offered, tmp.path())?;
        return Ok(());
    }
    let cfg = WorldConfig {
        events,
        ..Default::default()
    };
    let (wall, cpu, r) = measure(|| produce_world(&conn, &cfg, false, None, &mut |_, _| {}));
    r?;
    println!(
        "produce (idempotent, acks=all): {events} records, {:.0} records/s wall, {:.0} records/CPU-s",
        events as f64 / wall.as_secs_f64(),
        events as f64 / cpu.as_secs_f64()
    );

    // Bare consumer: every partition from the beginning to the high watermark, payloads copied.
    let b0 = proc_cpu(pid);
    let (wall, cpu, recs) = measure(|| read_topic(&conn, topics::INGRESS));
    let n = recs?.len() as f64;
    let bare = n / wall.as_secs_f64();
    println!(
        "bare rdkafka consumer: {n} records, {bare:.0} records/s wall, {:.0} records/CPU-s (broker CPU {:.1}s)",
        n / cpu.as_secs_f64(),
        (proc_cpu(pid).saturating_sub(b0)).as_secs_f64()
    );

    let ingress = Ingress::Kafka {
        conn: conn.clone(),
        topic: topics::INGRESS.to_owned(),
        start: KafkaStart::Beginning,
        end: KafkaEnd::Latest,
    };
    let mut sustainable = 0.0;
    for (label, publish, workers) in [
        ("pipeline -w2, publishing", true, 2),
        ("pipeline -w2, no publishing", false, 2),
        ("pipeline -w1, no publishing", false, 1),
    ] {
        let data = tmp.path().join(format!("data-{}-{workers}", publish));
        let opts = RunOptions {
            publish: publish.then(|| conn.clone()),
            ..RunOptions::threads(workers)
        };
        let b0 = proc_cpu(pid);
        let (wall, cpu, out) = measure(|| run_with(&profile, &ingress, &data, &opts));
        let out = out?.ok_or_else(|| anyhow::anyhow!("no outcome"))?;
        let n = out.manifest()?.totals.total() as f64;
        let rate = n / wall.as_secs_f64();
        if publish {
            sustainable = rate;
        }
        println!(
            "{label}: {n} records, {rate:.0} records/s wall, {:.0} records/CPU-s, ratio to bare consumer {:.3} (broker CPU {:.1}s)",
            n / cpu.as_secs_f64(),
            rate / bare,
            (proc_cpu(pid).saturating_sub(b0)).as_secs_f64()
        );
    }

    // The broker's own floor: produce → consume round trip through tansu at a low rate,
    // measured by a bare consumer from each record's send timestamp.
    bare_round_trip(&conn, 2_000, 500.0)?;

    // Latency at half the sustainable rate, live: allowed_lateness 0, then 5 s.
    let offered = (sustainable / 2.0).max(100.0);
    for (name, seed) in [("lowlatency", 99u64), ("local", 98)] {
        live_latency(&broker.addr(), name, seed, offered, tmp.path())?;
    }
    drop(broker);
    Ok(())
}

/// A live world at `offered` records/s for `TIDEMARK_BENCH_LATENCY_SECS` (default 20 s) while
/// an unbounded, cold-started run under profile `name` (`-w2` or
/// `TIDEMARK_BENCH_LATENCY_WORKERS`, publishing) consumes it and is stopped once the world is
/// sent; prints the engine and end-to-end latency percentiles.
fn live_latency(
    addr: &str,
    name: &str,
    seed: u64,
    offered: f64,
    tmp: &std::path::Path,
) -> anyhow::Result<()> {
    let low = load(name)?;
    let lconn = low.kafka_conn(Some(addr));
    let lateness = low.ig.allowed_lateness;
    let secs: f64 = tidemark_benches::env_or("TIDEMARK_BENCH_LATENCY_SECS", 20.0);
    let workers: usize = tidemark_benches::env_or("TIDEMARK_BENCH_LATENCY_WORKERS", 2);
    let starts = tidemark_sources::KafkaSource::new(
        lconn.clone(),
        topics::INGRESS,
        KafkaStart::Beginning,
        KafkaEnd::Latest,
    )
    .high_watermarks()?;
    let opts = RunOptions {
        publish: Some(lconn.clone()),
        // The live tail only: cold state is what this latency probe wants.
        cold_start: true,
        ..RunOptions::threads(workers)
    };
    let data = tmp.join(format!("live-{name}"));
    let ingress = Ingress::Kafka {
        conn: lconn.clone(),
        topic: topics::INGRESS.to_owned(),
        start: KafkaStart::Offsets(starts),
        // Unbounded, stopped as a service is: a bounded run decides the last
        // allowed_lateness of a finite world only when the stream ends, which is not a
        // steady state (it set p95 at L + 3 s at L = 5 s).
        end: KafkaEnd::Unbounded,
    };
    let stop = opts.stop.clone();
    let run = std::thread::spawn(move || run_with(&low, &ingress, &data, &opts));
    // The run connects, builds its dataflow and polls the empty tail before the world starts:
    // the probe measures the steady state, not the catching up on a backlog that piles up
    // while a cold process starts (which reached 4 s and set the p95 before this warm-up).
    let warmup: f64 = tidemark_benches::env_or("TIDEMARK_BENCH_WARMUP_SECS", 3.0);
    std::thread::sleep(Duration::from_secs_f64(warmup));
    let live = WorldConfig {
        events: (offered * secs) as u64,
        seed,
        start_ms: tidemark_jobs::kafka::live_start_ms(),
        rate_per_sec: offered,
        jitter_ms: 0,
        follow_up_scale: 0.01,
        // Stragglers within the allowed lateness: only injected LATE_EVENTs are late.
        straggler_ms: tidemark_benches::env_or(
            "TIDEMARK_BENCH_STRAGGLER_MS",
            lateness.as_millis() as u64,
        ),
        ..Default::default()
    };
    let t0 = Instant::now();
    produce_world(&lconn, &live, true, None, &mut |_, _| {})?;
    let produced = t0.elapsed();
    // Stop once the world has been sent: what the run decided while the stream was live is
    // the measurement; the last allowed_lateness is decided by the next run (or never here).
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let out = run
        .join()
        .map_err(|_| anyhow::anyhow!("run panicked"))??
        .ok_or_else(|| anyhow::anyhow!("no outcome"))?;
    let got = live.events as f64 / produced.as_secs_f64();
    match out.engine_latency {
        Some((n, p50, p95, p99, max)) => {
            let ms = |us: u64| us as f64 / 1000.0;
            println!(
                "engine latency (record polled → decision handed to the producer) at {offered:.0} records/s offered ({got:.0}/s sent), {name} profile (allowed_lateness {:?}), -w{workers}: {n} decisions, p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                lateness, ms(p50), ms(p95), ms(p99), ms(max)
            )
        }
        None => println!("engine latency: no decisions"),
    }
    match out.latency {
        Some((n, p50, p95, p99, max)) => println!(
            "end-to-end latency (ingress record timestamp → decision handed to the producer), same run: {n} decisions, p50 {p50} ms, p95 {p95} ms, p99 {p99} ms, max {max} ms"
        ),
        None => println!("latency: no decisions"),
    }
    Ok(())
}

/// Sends `n` records at `rate`/s to the ingress topic's partition 0 (timestamp = send time)
/// while a bare consumer reads them; prints round-trip percentiles.
fn bare_round_trip(conn: &tidemark_sources::KafkaConn, n: u64, rate: f64) -> anyhow::Result<()> {
    use tidemark_sources::{PartitionedSource, ReadStatus};
    let src = tidemark_sources::KafkaSource::new(
        conn.clone(),
        topics::INGRESS,
        KafkaStart::Beginning,
        KafkaEnd::Unbounded,
    );
    let start = src.high_watermarks()?.get(&0).copied().unwrap_or(0);
    let src = tidemark_sources::KafkaSource::new(
        conn.clone(),
        topics::INGRESS,
        KafkaStart::Offsets([(0, start)].into_iter().collect()),
        KafkaEnd::Offsets([(0, start + n)].into_iter().collect()),
    );
    let mut reader = src.open(0)?;
    let producer = tidemark_sinks::kafka::KafkaProducer::new(&conn.client_config())?;
    producer.wait_ready(conn.request_timeout)?;
    let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000, 3)?;
    let gap = Duration::from_secs_f64(1.0 / rate);
    let t0 = Instant::now();
    let mut sent = 0u64;
    let mut buf = Vec::new();
    loop {
        while sent < n && t0.elapsed() >= gap.mul_f64(sent as f64) {
            let now = tidemark_jobs::wallclock::now_ms();
            producer.send(
                topics::INGRESS,
                Some(0),
                b"probe",
                b"probe",
                Some(now as i64),
            )?;
            sent += 1;
        }
        buf.clear();
        let st = reader.poll(1024, &mut buf)?;
        let now = tidemark_jobs::wallclock::now_ms();
        for r in &buf {
            h.saturating_record(now.saturating_sub(r.record_ts).max(1));
        }
        if st == ReadStatus::End {
            break;
        }
        if buf.is_empty() {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    let d = producer.finish(Duration::from_secs(30))?;
    println!(
        "broker round trip (bare produce -> bare consume, {n} records at {rate:.0}/s, {} re-sent): p50 {} ms, p95 {} ms, p99 {} ms, max {} ms",
        d.retried,
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.95),
        h.value_at_quantile(0.99),
        h.max()
    );
    Ok(())
}
