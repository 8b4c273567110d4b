//! The identity graph two ways, on the same edge stream: the interned `LiveGraph` (one worker,
//! per-decision search, union-find at each 10-minute boundary: what `IdentityGraph` runs) and
//! a differential-dataflow formulation (edges entering at s+1 and leaving at s+1+ttl, hubs
//! removed by antijoin with a live-degree count, connected components by `iterate` with
//! min-label propagation, cluster sizes by `count`), which partitions the graph over workers.
//! The differential side here maintains labels and sizes only (no per-decision reads), so its
//! cost is a lower bound. Prints edges per CPU-second for each.
//! `TIDEMARK_BENCH_EVENTS` sets the world size (default 250k).

use std::time::Duration;

use anyhow::Result;
use differential_dataflow::input::InputSession;
use differential_dataflow::operators::iterate::Iterate;
use timely::dataflow::operators::probe::Handle;

use tidemark_benches::measure;
use tidemark_dataflows::ieg::{Entity, GraphPolicy, LiveGraph};
use tidemark_jobs::world::{generate, FileLogSink, WorldConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// (time, pairs of typed entity keys, card key if a transaction).
type Ev = (u64, Vec<(String, String)>, Option<String>);

/// An [`Ev`] as the graph's worker receives it: entities with their key ids.
type KeyedEv = (u64, Vec<(Entity, Entity)>, Option<Entity>);

fn events(dir: &std::path::Path, policy: &GraphPolicy) -> Result<Vec<Ev>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let path = e?.path();
        if path.extension().is_none_or(|x| x != "log") {
            continue;
        }
        for line in std::fs::read_to_string(&path)?.lines() {
            let Some((ts, json)) = line.split_once('\t') else {
                continue;
            };
            let Ok(ts) = ts.parse::<u64>() else { continue };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
                continue;
            };
            let ty = v["event_type"].as_str().unwrap_or_default();
            let p = &v["payload"];
            let key = |f: &str| {
                p[f].as_str()
                    .map(|x| format!("{}:{x}", f.strip_suffix("_id").unwrap_or(f)))
            };
            let pairs: Vec<(String, String)> = policy
                .edges
                .get(ty)
                .map(|decls| {
                    decls
                        .iter()
                        .filter_map(|(a, b)| Some((key(a)?, key(b)?)))
                        .collect()
                })
                .unwrap_or_default();
            let card = (ty == "txn.authorization.v1")
                .then(|| key("card_id"))
                .flatten();
            out.push((ts, pairs, card));
        }
    }
    out.sort_by_key(|e| e.0);
    Ok(out)
}

fn id(key: &str) -> u64 {
    tidemark_operators::hashing::key_id(key.as_bytes()) as u64
}

fn differential(evs: &[Ev], ttl: u64, cap: usize, workers: usize) -> Result<()> {
    let evs = std::sync::Arc::new(evs.to_vec());
    timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let mut input: InputSession<u64, (u64, u64), isize> = InputSession::new();
        let probe = Handle::new();
        worker.dataflow::<u64, _, _>(|scope| {
            let edges = input.to_collection(scope);
            let live = edges.distinct();
            let hubs = live
                .clone()
                .map(|(a, _)| a)
                .count()
                .filter(move |(_, d)| *d as usize > cap)
                .map(|(a, _)| a);
            let nonhub = live
                .antijoin(hubs.clone())
                .map(|(a, b)| (b, a))
                .antijoin(hubs)
                .map(|(b, a)| (a, b));
            let nodes = nonhub.clone().map(|(a, _)| (a, a));
            let labels = nodes.clone().iterate(|scope, inner| {
                let edges = nonhub.enter(scope);
                let nodes = nodes.enter(scope);
                inner
                    .join_map(edges, |_k, l, d| (*d, *l))
                    .concat(nodes)
                    .reduce(|_k, input, output| output.push((*input[0].0, 1)))
            });
            labels.map(|(_n, l)| l).count().probe_with(&probe);
        });
        for (i, (s, pairs, _)) in evs.iter().enumerate() {
            input.advance_to(*s + 1);
            if i % peers == index {
                for (a, b) in pairs {
                    let (a, b) = (id(a), id(b));
                    if a == b {
                        continue;
                    }
                    for e in [(a, b), (b, a)] {
                        input.update_at(e, s + 1, 1);
                        input.update_at(e, s + 1 + ttl, -1);
                    }
                }
            }
            if i % 4096 == 4095 {
                input.flush();
                worker.step_while(|| probe.less_than(input.time()));
            }
        }
        input.flush();
        worker.step_while(|| probe.less_than(input.time()));
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

fn main() -> Result<()> {
    tidemark_jobs::tune_memory();
    let n: u64 = tidemark_benches::env_or("TIDEMARK_BENCH_EVENTS", 250_000);
    let tmp = tempfile::tempdir()?;
    let cfg = WorldConfig {
        events: n,
        ..Default::default()
    };
    let mut sink = FileLogSink::create(tmp.path(), cfg.partitions)?;
    generate(&cfg, &mut sink, &mut |_, _| {})?;
    drop(sink);
    let policy = GraphPolicy::default();
    let evs = events(tmp.path(), &policy)?;
    let edges: usize = evs.iter().map(|e| e.1.len()).sum();
    let ttl = policy.edge_ttl.as_millis() as u64;
    let snapshot = Duration::from_secs(600).as_millis() as u64;

    // Entities as the graph's worker receives them: key ids computed where events are parsed.
    let keyed: Vec<KeyedEv> = evs
        .iter()
        .map(|(s, pairs, card)| {
            let pairs = pairs
                .iter()
                .map(|(a, b)| (Entity::new(a.clone()), Entity::new(b.clone())))
                .collect();
            (*s, pairs, card.clone().map(Entity::new))
        })
        .collect();
    let (wall, cpu, ()) = measure(|| {
        let mut g = LiveGraph::new(ttl, policy.degree_cap);
        let mut next = evs.first().map_or(0, |e| (e.0 / snapshot + 1) * snapshot);
        for (s, pairs, card) in &keyed {
            while next <= *s {
                g.expire(next);
                std::hint::black_box(g.version(next));
                next += snapshot;
            }
            g.expire(*s);
            if let Some(c) = card {
                std::hint::black_box(g.cluster(c, *s));
            }
            for (a, b) in pairs {
                g.add(a, b, *s);
            }
        }
    });
    println!(
        "LiveGraph (worker 0 only): {} events, {edges} edges, {:.2}s CPU, {:.2}s wall: {:.0} edges/CPU-s",
        evs.len(),
        cpu.as_secs_f64(),
        wall.as_secs_f64(),
        edges as f64 / cpu.as_secs_f64()
    );
    for workers in [1usize, 2] {
        let (wall, cpu, r) = measure(|| differential(&evs, ttl, policy.degree_cap, workers));
        r?;
        println!(
            "differential CC (labels + sizes, no reads), -w{workers}: {:.2}s CPU, {:.2}s wall: {:.0} edges/CPU-s",
            cpu.as_secs_f64(),
            wall.as_secs_f64(),
            edges as f64 / cpu.as_secs_f64()
        );
    }
    Ok(())
}
