//! run → replay gives byte-identical audit files and identical snapshots; sub-range replays
//! match the corresponding part of the run; an altered archive fails loudly; a changed policy
//! is reported as a divergence, never a quiet match.

use tidemark_jobs::config::{load, Profile};
use tidemark_jobs::replay::replay;
use tidemark_jobs::world::WorldConfig;
use tidemark_tests::{make_world, read_audit, read_tree, run_ig};

fn profile() -> Profile {
    let mut p = load("local").unwrap();
    p.ofp.snapshot_interval = std::time::Duration::from_secs(120);
    p.dla.audit_interval = std::time::Duration::from_secs(300);
    p
}

fn setup(tmp: &std::path::Path) -> (std::path::PathBuf, Profile) {
    let ingress = tmp.join("in");
    let cfg = WorldConfig {
        events: 25_000,
        seed: 5,
        bad_rate: 0.03,
        fraud_rate: 0.01,
        rate_per_sec: 40.0,
        ..Default::default()
    };
    make_world(&ingress, &cfg);
    let data = tmp.join("data");
    let p = profile();
    run_ig(&p, &ingress, &data, 2);
    (data, p)
}

#[test]
fn full_and_partial_replays_match_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, p) = setup(tmp.path());
    let audit = read_tree(&data, "dla/audit");
    let snaps = read_tree(&data, "ofp/snapshots");
    assert!(audit.len() >= 4, "several audit files: {:?}", audit.keys());
    assert!(snaps.len() >= 3, "several snapshots: {:?}", snaps.keys());

    // Full replay, 1 and 2 workers: byte-identical files with identical names.
    for w in [1, 2] {
        let out = tmp.path().join(format!("replay-{w}"));
        let r = replay(&p, &data, &out, 0, None, w).unwrap();
        assert_eq!(r.divergence, None, "{w} workers");
        assert_eq!(
            read_tree(&out, "dla/audit"),
            audit,
            "{w} workers: audit files"
        );
        assert_eq!(
            read_tree(&out, "ofp/snapshots"),
            snaps,
            "{w} workers: snapshots"
        );
        assert!(r.compared > 10_000);
    }

    // Sub-ranges, aligned and not aligned to audit intervals and snapshot boundaries.
    let rows = read_audit(&data);
    let (lo, hi) = (
        rows.first().unwrap().logical_time,
        rows.last().unwrap().logical_time,
    );
    let span = hi - lo;
    for (k, (from, to)) in [
        (lo + span / 3, lo + 2 * span / 3),
        (lo + span / 2 + 7, hi + 1),
    ]
    .into_iter()
    .enumerate()
    {
        let out = tmp.path().join(format!("sub-{k}"));
        let r = replay(&p, &data, &out, from, Some(to), 1).unwrap();
        assert_eq!(r.divergence, None, "range [{from}, {to})");
        let expected: Vec<_> = rows
            .iter()
            .filter(|r| r.logical_time >= from && r.logical_time < to)
            .cloned()
            .collect();
        assert_eq!(read_audit(&out), expected, "range [{from}, {to}) decisions");
        assert!(!expected.is_empty());
        for (path, bytes) in read_tree(&out, "ofp/snapshots") {
            assert_eq!(snaps.get(&path), Some(&bytes), "snapshot {path}");
        }
    }
}

#[test]
fn altered_archive_fails_loudly_and_policy_changes_diverge() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, p) = setup(tmp.path());

    // A changed threshold must be reported as a divergence.
    let mut q = p.clone();
    q.df.review_threshold = 0.01;
    let r = replay(&q, &data, tmp.path().join("policy"), 0, None, 1).unwrap();
    let d = r.divergence.expect("a different policy cannot MATCH");
    assert!(d.contains("differs"), "{d}");

    // Replays never write into an existing output.
    let err = replay(&p, &data, &data, 0, None, 1).unwrap_err();
    assert!(format!("{err:#}").contains("not empty"), "{err:#}");

    // One flipped byte in an archive file: the replay fails, naming the file.
    let archive = read_tree(&data, "archive");
    let (path, bytes) = archive
        .iter()
        .find(|(k, _)| k.ends_with(".parquet"))
        .unwrap();
    let mut altered = bytes.clone();
    let mid = altered.len() / 2;
    altered[mid] ^= 0x01;
    std::fs::write(data.join(path), &altered).unwrap();
    let err = replay(&p, &data, tmp.path().join("altered"), 0, None, 2).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains(path) && msg.contains("altered"), "{msg}");
}
