//! An independent sequential oracle for IEG/OFP/DF: a plain loop over the admitted events
//! sorted by logical time — windows by scanning, clusters by union-find over the live,
//! hub-filtered edges, the logistic score by the formula of SPEC §8 — agrees with every
//! feature value, cluster size and decision the dataflow wrote, on seeded random worlds with
//! late, clamped and duplicate records and posture changes — with 2 and 4 worker threads, and
//! with a timely cluster of 2 processes x 2 workers.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;

use tidemark_dataflows::ig::LatePolicy;
use tidemark_jobs::broker::free_port;
use tidemark_jobs::config::{load, Profile};
use tidemark_jobs::run::{run_with, Cluster, Ingress, RunOptions};
use tidemark_jobs::world::WorldConfig;
use tidemark_tests::{make_world, read_archive, read_audit, read_log, run_ig, write_log};

struct Ev {
    t: u64,
    id: String,
    ty: String,
    coord: (u32, u64),
    f: BTreeMap<String, String>,
}

fn events(data: &std::path::Path) -> Vec<Ev> {
    let mut out: Vec<Ev> = read_archive(data)
        .into_iter()
        .map(|a| {
            let v: Value = serde_json::from_str(&a.envelope).unwrap();
            let f = v["payload"]
                .as_object()
                .unwrap()
                .iter()
                .filter(|(_, x)| !x.is_null())
                .map(|(k, x)| {
                    (
                        k.clone(),
                        x.as_str().map_or_else(|| x.to_string(), str::to_owned),
                    )
                })
                .collect();
            Ev {
                t: v["logical_time"].as_u64().unwrap(),
                id: a.event_id,
                ty: a.event_type.to_string(),
                coord: (a.coord.partition, a.coord.offset),
                f,
            }
        })
        .collect();
    out.sort_by(|a, b| (a.t, &a.id).cmp(&(b.t, &b.id)));
    out
}

fn feature(p: &Profile, idx: usize, evs: &[Ev], e: &Ev) -> Option<i64> {
    let d = &p.features[idx];
    let key = e.f.get(&d.key)?;
    let w = d.window.as_millis() as u64;
    let lo = evs.partition_point(|x| x.t < e.t.saturating_sub(w));
    let hi = evs.partition_point(|x| x.t < e.t);
    let mut xs: Vec<&Ev> = evs[lo..hi]
        .iter()
        .filter(|x| d.event_types.contains(&x.ty) && x.f.get(&d.key) == Some(key))
        .filter(|x| {
            d.filter.as_ref().is_none_or(|flt| {
                let (k, v) = flt.split_once('=').unwrap();
                x.f.get(k).map(String::as_str) == Some(v)
            })
        })
        .collect();
    let val = |x: &&Ev| d.value.as_ref().and_then(|v| x.f.get(v).cloned());
    xs.retain(|x| d.value.is_none() || val(x).is_some());
    let ints = || xs.iter().map(|x| val(x).unwrap().parse::<i64>().unwrap());
    use tidemark_operators::window::Agg::*;
    match d.agg {
        Count => Some(xs.len() as i64),
        Sum => Some(ints().sum()),
        Min => ints().min(),
        Max => ints().max(),
        DistinctCount => Some(xs.iter().map(val).collect::<BTreeSet<_>>().len() as i64),
        LastGap => xs.iter().map(|x| x.t).max().map(|s| (e.t - s) as i64),
    }
}

fn ent(field: &str, v: &str) -> String {
    format!("{}:{v}", field.strip_suffix("_id").unwrap_or(field))
}

fn find(p: &mut HashMap<String, String>, x: &str) -> String {
    let mut r = x.to_owned();
    while let Some(q) = p.get(&r).cloned() {
        if q == r {
            break;
        }
        r = q;
    }
    r
}

/// (cluster_size, cluster_cards) of `card` over edges live at `t`.
fn cluster(p: &Profile, evs: &[Ev], t: u64, card: &str) -> (i64, i64) {
    let ttl = p.graph.edge_ttl.as_millis() as u64;
    let mut edges: BTreeSet<(String, String)> = BTreeSet::new();
    let lo = evs.partition_point(|x| x.t < t.saturating_sub(ttl));
    let hi = evs.partition_point(|x| x.t < t);
    for x in &evs[lo..hi] {
        for (a, b) in p.graph.edges.get(&x.ty).into_iter().flatten() {
            if let (Some(va), Some(vb)) = (x.f.get(a), x.f.get(b)) {
                let (ea, eb) = (ent(a, va), ent(b, vb));
                if ea != eb {
                    edges.insert((ea.clone(), eb.clone()));
                    edges.insert((eb, ea));
                }
            }
        }
    }
    let mut degree: HashMap<&str, usize> = HashMap::new();
    for (a, _) in &edges {
        *degree.entry(a).or_default() += 1;
    }
    let hub = |n: &str| degree.get(n).copied().unwrap_or(0) > p.graph.degree_cap;
    let mut parent: HashMap<String, String> = HashMap::new();
    for (a, b) in &edges {
        if hub(a) || hub(b) {
            continue;
        }
        let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
        parent.entry(ra.clone()).or_insert(ra.clone());
        parent.entry(rb.clone()).or_insert(rb.clone());
        if ra != rb {
            parent.insert(ra, rb);
        }
    }
    if hub(card) || !parent.contains_key(card) {
        return (1, i64::from(card.starts_with("card:")));
    }
    let root = find(&mut parent, card);
    let members: Vec<String> = parent.keys().cloned().collect::<Vec<_>>();
    let comp: Vec<&String> = members
        .iter()
        .filter(|m| find(&mut parent, m) == root)
        .collect();
    (
        comp.len() as i64,
        comp.iter().filter(|m| m.starts_with("card:")).count() as i64,
    )
}

/// How the run is laid out over workers.
#[derive(Clone, Copy)]
enum Layout {
    /// One process with this many worker threads.
    Threads(usize),
    /// A timely cluster of this many processes (threads of this test, talking over loopback
    /// TCP as separate processes would), each with this many workers.
    Cluster(usize, usize),
}

/// Runs every stage over `ingress` into `data` with `layout`.
fn run_layout(p: &Profile, ingress: &std::path::Path, data: &std::path::Path, layout: Layout) {
    match layout {
        Layout::Threads(n) => {
            run_ig(p, ingress, data, n);
        }
        Layout::Cluster(processes, threads) => {
            let addresses: Vec<String> = (0..processes)
                .map(|_| format!("127.0.0.1:{}", free_port().expect("free port")))
                .collect();
            let handles: Vec<_> = (0..processes)
                .map(|process| {
                    let opts = RunOptions {
                        cluster: Cluster {
                            threads,
                            process,
                            addresses: addresses.clone(),
                        },
                        ..RunOptions::threads(threads)
                    };
                    let (p, ingress, data) = (p.clone(), ingress.to_path_buf(), data.to_path_buf());
                    std::thread::spawn(move || {
                        run_with(&p, &Ingress::File(ingress), &data, &opts).map(|o| o.is_some())
                    })
                })
                .collect();
            let outcomes: Vec<bool> = handles
                .into_iter()
                .map(|h| h.join().expect("process thread").expect("run"))
                .collect();
            assert_eq!(
                outcomes,
                (0..processes).map(|i| i == 0).collect::<Vec<_>>(),
                "process 0 reports the run"
            );
        }
    }
}

fn check(seed: u64, late_policy: LatePolicy) {
    check_layout(seed, late_policy, Layout::Threads(2));
}

fn check_layout(seed: u64, late_policy: LatePolicy, layout: Layout) {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = WorldConfig {
        events: 4_000,
        seed,
        bad_rate: 0.05,
        fraud_rate: 0.02,
        rate_per_sec: 10.0,
        ..Default::default()
    };
    make_world(&tmp.path().join("gen"), &cfg);
    // Posture changes: DEGRADED, SAFE, then NORMAL again, spliced into partition 0.
    let mut log = read_log(&tmp.path().join("gen"));
    let n = log[0].len();
    for (k, posture) in [(3usize, "NORMAL"), (2, "SAFE"), (1, "DEGRADED")] {
        let at = n * k / 4;
        let ts = log[0][at].0;
        let ev = serde_json::json!({
            "event_id": format!("posture-{k}"), "event_type": "dl.posture.v1",
            "ts_utc": tidemark_operators::time::fmt_rfc3339_millis(ts),
            "manifest_fingerprint": "ab".repeat(32), "schema_version": 1, "producer": "degrade-ladder",
            "payload": {"posture": posture, "reason": "test"}
        });
        log[0].insert(at, (ts, serde_json::to_vec(&ev).unwrap()));
    }
    write_log(&tmp.path().join("in"), &log);
    let mut p = load("local").unwrap();
    p.ig.late_policy = late_policy;
    p.graph.edge_ttl = std::time::Duration::from_secs(600);
    p.graph.degree_cap = 4;
    let data = tmp.path().join("data");
    run_layout(&p, &tmp.path().join("in"), &data, layout);
    let bundle = p.load_bundle().unwrap().bundle;

    let evs = events(&data);
    let audit = read_audit(&data);
    let txns: Vec<&Ev> = evs
        .iter()
        .filter(|e| e.ty == "txn.authorization.v1")
        .collect();
    assert_eq!(
        audit.len(),
        txns.len(),
        "one decision per admitted transaction"
    );
    let mut postures: Vec<(u64, (u32, u64), String)> = evs
        .iter()
        .filter(|e| e.ty == "dl.posture.v1")
        .map(|e| (e.t, e.coord, e.f["posture"].clone()))
        .collect();
    postures.sort();
    let mut seen_big_cluster = false;
    for (e, a) in txns.iter().zip(&audit) {
        assert_eq!((e.t, &e.id), (a.logical_time, &a.event_id));
        let posture = postures
            .iter()
            .rev()
            .find(|p| p.0 <= e.t)
            .map_or("NORMAL", |p| p.2.as_str());
        assert_eq!(a.posture.as_str(), posture, "{}", e.id);
        let (size, cards) = cluster(&p, &evs, e.t, &ent("card_id", &e.f["card_id"]));
        seen_big_cluster |= cards > 1;
        let mut z = bundle.intercept;
        let mut vector = Vec::new();
        for bf in &bundle.features {
            let v = match bf.name.as_str() {
                "cluster_size" | "cluster_cards" if posture == "DEGRADED" => None,
                "cluster_size" => Some(size),
                "cluster_cards" => Some(cards),
                name => {
                    let idx = p.features.iter().position(|d| d.name == name).unwrap();
                    feature(&p, idx, &evs, e)
                }
            };
            if let Some(x) = v {
                let fx = match bf.transform {
                    tidemark_dataflows::df::Transform::Identity => x as f64,
                    tidemark_dataflows::df::Transform::Log1p => (x.max(0) as f64).ln_1p(),
                };
                z += bf.weight * fx;
            }
            vector.push(serde_json::json!([bf.name, v]));
        }
        let got: Value = serde_json::from_str(&a.features).unwrap();
        assert_eq!(got, Value::Array(vector), "features of {}", e.id);
        let score = 1.0 / (1.0 + (-z / bundle.temperature).exp());
        assert!(
            (a.score - score).abs() < 1e-9,
            "score of {}: {} vs {score}",
            e.id,
            a.score
        );
        let amount: i64 = e.f["amount_minor"].parse().unwrap();
        let decision = if posture == "SAFE" {
            if amount >= p.df.safe_review_amount_minor {
                "REVIEW"
            } else {
                "ALLOW"
            }
        } else if score >= p.df.block_threshold {
            "BLOCK"
        } else if score >= p.df.review_threshold {
            "REVIEW"
        } else {
            "ALLOW"
        };
        assert_eq!(a.decision.as_str(), decision, "decision of {}", e.id);
    }
    assert!(
        seen_big_cluster,
        "the world must produce multi-card clusters"
    );
    let every_feature_nonzero = p.features.iter().enumerate().all(|(i, _)| {
        txns.iter()
            .any(|e| feature(&p, i, &evs, e).is_some_and(|v| v != 0))
    });
    assert!(
        every_feature_nonzero,
        "every feature takes a non-zero value somewhere"
    );
}

#[test]
fn oracle_agrees_quarantine_policy() {
    check(21, LatePolicy::Quarantine);
}

#[test]
fn oracle_agrees_clamp_policy() {
    check(22, LatePolicy::Clamp);
}

#[test]
fn oracle_agrees_with_four_workers() {
    check_layout(23, LatePolicy::Quarantine, Layout::Threads(4));
}

#[test]
fn oracle_agrees_with_two_processes_of_two_workers() {
    check_layout(24, LatePolicy::Quarantine, Layout::Cluster(2, 2));
}
