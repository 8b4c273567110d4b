//! Same world + profile → byte-identical archive, receipts and quarantine with 1, 2 and 4
//! worker threads and on a rerun; nothing is lost per partition.

use std::collections::BTreeMap;

use tidemark_dataflows::ig::LatePolicy;
use tidemark_jobs::config::Profile;
use tidemark_jobs::world::WorldConfig;
use tidemark_operators::ingest::ReceiptStatus;
use tidemark_tests::{make_world, read_log, read_receipts, read_tree, run_ig};

fn primary_truths(data: &std::path::Path) -> BTreeMap<String, Vec<u8>> {
    let mut all = read_tree(data, "archive");
    for sub in ["ig", "dla", "ofp"] {
        all.extend(read_tree(data, sub));
    }
    all
}

fn local() -> Profile {
    tidemark_jobs::config::load("local").unwrap()
}

fn check_profile(profile: &Profile) {
    let tmp = tempfile::tempdir().unwrap();
    let ingress = tmp.path().join("in");
    let cfg = WorldConfig {
        events: 40_000,
        seed: 11,
        partitions: 5,
        bad_rate: 0.05,
        ..Default::default()
    };
    make_world(&ingress, &cfg);
    let base = tmp.path().join("w1");
    let first = run_ig(profile, &ingress, &base, 1);
    let expected = primary_truths(&base);
    assert!(
        expected.keys().any(|k| k.starts_with("archive/t=")),
        "archive files written"
    );
    assert!(
        expected.keys().any(|k| k.starts_with("ig/quarantine/")),
        "quarantine files written"
    );
    for workers in [2, 4] {
        let data = tmp.path().join(format!("w{workers}"));
        let out = run_ig(profile, &ingress, &data, workers);
        assert_eq!(
            out.manifest, first.manifest,
            "manifest differs with {workers} workers"
        );
        let got = primary_truths(&data);
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>()
        );
        for (path, bytes) in &expected {
            assert!(got[path] == *bytes, "{path} differs with {workers} workers");
        }
    }
    // Rerun into the same data root: write-once no-ops, identical outputs.
    let again = run_ig(profile, &ingress, &base, 2);
    assert_eq!(again.manifest, first.manifest);
    assert_eq!(primary_truths(&base), expected);
    assert_eq!(read_tree(&base, "runs").len(), 2, "one run record per run");

    // Nothing lost: per partition, admitted + quarantined + duplicate = ingress records.
    let log = read_log(&ingress);
    let receipts = read_receipts(&base);
    for (p, recs) in log.iter().enumerate() {
        let mine: Vec<_> = receipts
            .iter()
            .filter(|r| r.coord.partition == p as u32)
            .collect();
        assert_eq!(
            mine.len(),
            recs.len(),
            "partition {p}: one receipt per record"
        );
        for (i, r) in mine.iter().enumerate() {
            assert_eq!(
                r.coord.offset, i as u64,
                "partition {p}: offsets contiguous"
            );
        }
        let by = |s| mine.iter().filter(|r| r.status == s).count();
        assert_eq!(
            by(ReceiptStatus::Admitted)
                + by(ReceiptStatus::Quarantined)
                + by(ReceiptStatus::Duplicate),
            recs.len()
        );
    }
    let t = first.manifest().expect("manifest").totals;
    assert_eq!(t.total(), log.iter().map(Vec::len).sum::<usize>() as u64);
    assert!(t.quarantined > 0 && t.duplicate > 0 && t.admitted > 0);
}

#[test]
fn identical_across_worker_counts_and_reruns_quarantine_policy() {
    check_profile(&local());
}

#[test]
fn identical_across_worker_counts_and_reruns_clamp_policy() {
    let mut p = local();
    p.ig.late_policy = LatePolicy::Clamp;
    p.ofp.snapshot_interval = std::time::Duration::from_secs(120);
    p.dla.audit_interval = std::time::Duration::from_secs(300);
    p.archive.interval = std::time::Duration::from_secs(600);
    p.archive.receipts_chunk = 3_000;
    check_profile(&p);
}

#[test]
fn rerun_with_a_different_policy_into_the_same_root_is_a_conflict() {
    let tmp = tempfile::tempdir().unwrap();
    let ingress = tmp.path().join("in");
    make_world(
        &ingress,
        &WorldConfig {
            events: 3_000,
            ..Default::default()
        },
    );
    let data = tmp.path().join("d");
    run_ig(&Profile::default(), &ingress, &data, 1);
    let mut p = Profile::default();
    p.ig.revision = 2;
    let err = tidemark_jobs::run::run(&p, &tidemark_jobs::run::Ingress::File(ingress), &data, 1)
        .expect_err("different bytes at the same path must fail");
    assert!(
        format!("{err:#}").contains("write-once conflict"),
        "{err:#}"
    );
}
