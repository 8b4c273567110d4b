//! Data roots on S3, against a real S3-protocol server on loopback (`tidemark-s3d`):
//! write-once under racing writers, the one-writer lease (refusal, takeover after a crash),
//! and the bounded run → verify → replay → audit → dataset flow on S3, byte-identical to the same run
//! on the local filesystem, with the S3 secret in no output and no object. The continuous
//! service on S3, with the server killed and restarted mid-run, is in `service.rs`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use support::s3d::{S3d, BUCKET, SECRET};
use support::truths;
use tidemark_sinks::{PutOutcome, Root, SinkError, WriteOnceStore};

fn tidemark(s3: &S3d) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tidemark"));
    c.env("TIDEMARK__WIRING__METRICS_ADDR", "").envs(s3.env());
    c
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{:?}: {}", cmd, text(&out));
    text(&out)
}

/// Every file under `dir` that contains `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p)
                .unwrap_or_default()
                .windows(needle.len())
                .any(|w| w == needle)
            {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}

/// A file-log world of 20,000 records (`seed`) under `dir` and the bounded run over it on a
/// local directory, the reference of the S3 runs: returns (`--ingress` value, local root).
fn world_and_local_run(s3: &S3d, dir: &Path, seed: u64, workers: usize) -> (String, PathBuf) {
    let world = dir.join("world");
    ok(tidemark(s3)
        .args([
            "world",
            "--events",
            "20000",
            "--seed",
            &seed.to_string(),
            "--out",
        ])
        .arg(&world));
    let ingress = format!("file:{}", world.display());
    let local = dir.join("local");
    ok(tidemark(s3)
        .args(["run", "--profile", "local", "-w", &workers.to_string()])
        .args(["--ingress", &ingress, "--data"])
        .arg(&local));
    (ingress, local)
}

fn store(s3: &S3d, prefix: &str, rt: &tokio::runtime::Runtime) -> WriteOnceStore {
    let root: Root = format!("s3://{BUCKET}/{prefix}").parse().unwrap();
    let config = s3.config();
    let config: Vec<(&str, &str)> = config.iter().map(|(k, v)| (*k, v.as_str())).collect();
    WriteOnceStore::open_with(&root, rt.handle().clone(), &config).unwrap()
}

/// Two writers (separate clients) race for the same 40 objects: with different bytes exactly
/// one creates each object and the other gets a conflict naming both digests; the object
/// holds the creator's bytes. With identical bytes one creates and the other is a no-op.
#[test]
fn write_once_holds_when_two_writers_race() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3d::start(dir.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let writers: Vec<WriteOnceStore> = (0..2).map(|_| store(&s3, "race", &rt)).collect();
    let body = |writer: usize, key: usize| -> Vec<u8> {
        // 256 KiB, so each upload takes a while and the two overlap.
        let mut b = format!("writer {writer} object {key} ").into_bytes();
        b.resize(256 * 1024, b'a' + (writer as u8));
        b
    };
    for same in [false, true] {
        let barrier = Arc::new(Barrier::new(2));
        let outcomes: Vec<Vec<Result<PutOutcome, SinkError>>> = std::thread::scope(|sc| {
            let handles: Vec<_> = writers
                .iter()
                .enumerate()
                .map(|(w, st)| {
                    let barrier = barrier.clone();
                    sc.spawn(move || {
                        (0..40)
                            .map(|k| {
                                barrier.wait();
                                let bytes = body(if same { 0 } else { w }, k);
                                st.put_once(&format!("o/{same}/{k:02}.bin"), bytes)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (k, (a, b)) in outcomes[0].iter().zip(&outcomes[1]).enumerate() {
            let created: Vec<usize> = [a, b]
                .iter()
                .enumerate()
                .filter(|(_, r)| matches!(r, Ok(PutOutcome::Created)))
                .map(|(w, _)| w)
                .collect();
            assert_eq!(
                created.len(),
                1,
                "object {k} (same bytes: {same}): {a:?} / {b:?}"
            );
            let loser = 1 - created[0];
            let lost = &outcomes[loser][k];
            if same {
                assert!(matches!(lost, Ok(PutOutcome::Unchanged)), "{k}: {lost:?}");
            } else {
                assert!(
                    matches!(lost, Err(SinkError::Conflict { .. })),
                    "object {k}: the second writer must see a conflict, got {lost:?}"
                );
            }
            let stored = writers[0].get(&format!("o/{same}/{k:02}.bin")).unwrap();
            let winner = if same { 0 } else { created[0] };
            assert!(
                stored == body(winner, k),
                "object {k}: not the creator's bytes"
            );
        }
    }
    assert_eq!(writers[0].stats().gave_up(), 0);
}

/// The bounded run, verify, replay and audit on `s3://…`: byte-identical to the run on a
/// local directory, replay MATCH, and the S3 secret nowhere in outputs or objects.
#[test]
fn run_verify_replay_and_audit_on_s3_equal_the_local_run() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3d::start(&dir.path().join("s3"));
    let (ingress, local) = world_and_local_run(&s3, dir.path(), 17, 2);
    let root = format!("s3://{BUCKET}/runs/a");
    let mut said = ok(tidemark(&s3).args([
        "run",
        "--profile",
        "local",
        "-w",
        "2",
        "--ingress",
        &ingress,
        "--data",
        &root,
    ]));
    // The same root through the profile setting instead of --data.
    said += &ok(tidemark(&s3)
        .env("TIDEMARK__WIRING__OBJECT_STORE", &root)
        .args(["verify"]));
    assert!(said.contains("verify: OK"), "{said}");
    let (got, want) = (truths(&s3.objects("runs/a")), truths(&local));
    assert!(want.keys().any(|k| k.starts_with("archive/manifests/")));
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (path, bytes) in &want {
        assert!(
            got[path] == *bytes,
            "{path} differs between S3 and the local run"
        );
    }
    // A conflicting --data and object_store is refused rather than guessed.
    let out = tidemark(&s3)
        .env("TIDEMARK__WIRING__OBJECT_STORE", &root)
        .args(["run", "--ingress", &ingress, "--data"])
        .arg(&local)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("names another root"), "{}", text(&out));
    // Replay from S3 into S3 matches; a second replay into the same output is refused.
    let out_root = format!("s3://{BUCKET}/replays/a");
    let r = ok(tidemark(&s3).args(["replay", "--data", &root, "--out", &out_root, "-w", "2"]));
    assert!(r.contains(": MATCH"), "{r}");
    said += &r;
    let again = tidemark(&s3)
        .args(["replay", "--data", &root, "--out", &out_root])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(text(&again).contains("not empty"), "{}", text(&again));
    // Audit of a decision read from S3.
    let audit = tidemark_jobs::demo::audit_rows(&local).unwrap();
    let id = &audit[audit.len() / 2].decision_id;
    let a = ok(tidemark(&s3).args(["audit", "--data", &root, id]));
    assert!(a.contains(id.as_str()), "{a}");
    said += &a;
    // A training dataset built from the archive on S3 into S3, certified against the audit,
    // with the same dataset hash as one built from the local root.
    let dataset = |data: &str, out: &str| {
        ok(tidemark(&s3).args([
            "dataset",
            "build",
            "--data",
            data,
            "--out",
            out,
            "--from",
            "2026-01-01T00:00:00Z",
            "--to",
            "1767229200000",
            "--labels-as-of",
            "2026-01-01T01:00:00Z",
        ]))
    };
    let ds_root = format!("s3://{BUCKET}/datasets");
    let on_s3 = dataset(&root, &ds_root);
    assert!(on_s3.contains("mismatches=0"), "{on_s3}");
    let local_ds = dir.path().join("datasets").display().to_string();
    let on_disk = dataset(&local.display().to_string(), &local_ds);
    let hash = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("dataset hash"))
            .map(str::to_owned)
    };
    assert!(
        hash(&on_s3).is_some() && hash(&on_s3) == hash(&on_disk),
        "{on_s3}\n{on_disk}"
    );
    let id = on_s3
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches(':')
        .to_owned();
    let v = ok(tidemark(&s3).args(["dataset", "verify", "--data", &root, "--out", &ds_root, &id]));
    assert!(v.contains("mismatches=0"), "{v}");
    said += &on_s3;
    // The secret is in no output, no object and no run record.
    assert!(!said.contains(SECRET));
    assert_eq!(
        files_containing(&s3.objects(""), SECRET.as_bytes()),
        Vec::<String>::new()
    );
}

/// One writer per S3 root: a second run is refused while the first holds the lease; a run
/// that crashed (abort at a failpoint, lease object left behind) blocks the root until its
/// lease expires, then the next run takes it over, resumes and ends equal to the local run.
#[test]
fn lease_refuses_a_second_writer_and_is_taken_over_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3d::start(&dir.path().join("s3"));
    let (ingress, local) = world_and_local_run(&s3, dir.path(), 5, 1);
    let root = format!("s3://{BUCKET}/leased");
    let run = |s3: &S3d| {
        let mut c = tidemark(s3);
        c.env("TIDEMARK__WIRING__LEASE_TTL", "4s").args([
            "run",
            "--profile",
            "local",
            "--ingress",
            &ingress,
            "--data",
            &root,
        ]);
        c
    };
    let crashed = run(&s3)
        .env("TIDEMARK_FAILPOINT", "after-file-write:3")
        .output()
        .unwrap();
    assert!(!crashed.status.success(), "{}", text(&crashed));
    assert!(text(&crashed).contains("failpoint"), "{}", text(&crashed));
    let lease = s3.objects("leased").join("_lease.json");
    assert!(lease.exists(), "a crashed run leaves its lease object");
    let t0 = Instant::now();
    let refused = run(&s3).output().unwrap();
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("held by another run"),
        "{}",
        text(&refused)
    );
    // After the TTL the root is free: the next run takes the lease over and completes.
    std::thread::sleep(
        Duration::from_secs(4).saturating_sub(t0.elapsed()) + Duration::from_millis(500),
    );
    let done = ok(&mut run(&s3));
    assert!(done.contains("took over an expired lease"), "{done}");
    assert!(!lease.exists(), "a clean exit releases the lease");
    let (got, want) = (truths(&s3.objects("leased")), truths(&local));
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (path, bytes) in &want {
        assert!(got[path] == *bytes, "{path} differs after the takeover");
    }
    ok(tidemark(&s3).args(["verify", "--data", &root]));
}
