//! The default bundle on the world generator: a clear majority of generated fraud is blocked or
//! reviewed while the vast majority of legitimate traffic is allowed.

use std::collections::{BTreeMap, BTreeSet};

use tidemark_jobs::config::load;
use tidemark_jobs::world::{generate, FileLogSink, WorldConfig};
use tidemark_tests::{read_audit, run_ig};

#[test]
fn default_bundle_separates_fraud_from_legit() {
    let tmp = tempfile::tempdir().unwrap();
    let ingress = tmp.path().join("in");
    let cfg = WorldConfig {
        events: 80_000,
        seed: 99,
        ..Default::default()
    };
    let mut sink = FileLogSink::create(&ingress, cfg.partitions).unwrap();
    let mut truth = BTreeSet::new();
    generate(&cfg, &mut sink, &mut |id, _| {
        truth.insert(id.to_owned());
    })
    .unwrap();
    let data = tmp.path().join("data");
    run_ig(&load("local").unwrap(), &ingress, &data, 2);
    let mut m: BTreeMap<(bool, String), u64> = BTreeMap::new();
    for r in read_audit(&data) {
        *m.entry((truth.contains(&r.event_id), r.decision.to_string()))
            .or_default() += 1;
    }
    let get = |f: bool, d: &str| m.get(&(f, d.to_owned())).copied().unwrap_or(0);
    let fraud = get(true, "ALLOW") + get(true, "REVIEW") + get(true, "BLOCK");
    let legit = get(false, "ALLOW") + get(false, "REVIEW") + get(false, "BLOCK");
    let caught = (get(true, "REVIEW") + get(true, "BLOCK")) as f64 / fraud as f64;
    let allowed = get(false, "ALLOW") as f64 / legit as f64;
    println!("confusion matrix: {m:?}; fraud caught {caught:.3}, legit allowed {allowed:.3}");
    assert!(fraud > 300, "enough fraud to judge: {fraud}");
    assert!(caught > 0.6, "fraud caught {caught:.3} ({m:?})");
    assert!(allowed > 0.95, "legit allowed {allowed:.3} ({m:?})");
}
