//! Every shipped profile parses; unknown keys fail with their path; env overrides wiring;
//! `verify` passes on a good archive and fails precisely on deleted, truncated or altered files.

use tidemark_jobs::config;
use tidemark_jobs::verify::verify;
use tidemark_jobs::world::WorldConfig;
use tidemark_sinks::WriteOnceStore;
use tidemark_tests::{make_world, run_ig};

fn profiles_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles")
}

#[test]
fn every_profile_parses_and_has_the_same_semantics() {
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(profiles_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let p = config::load(path.to_str().unwrap())
                .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            seen.push((p.name.clone(), p));
        }
    }
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    let names: Vec<_> = seen.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["dev", "local", "lowlatency", "prod"]);
    // `lowlatency` is `local` with allowed_lateness 0 and nothing else changed.
    let local = seen.iter().find(|(n, _)| n == "local").unwrap().1.clone();
    let low = seen
        .iter()
        .find(|(n, _)| n == "lowlatency")
        .unwrap()
        .1
        .clone();
    assert_eq!(low.ig.allowed_lateness, std::time::Duration::ZERO);
    let mut patched = low.clone();
    patched.name = local.name.clone();
    patched.ig.allowed_lateness = local.ig.allowed_lateness;
    patched.source = local.source.clone();
    assert_eq!(patched, local);
    assert_ne!(low.policy_rev(), local.policy_rev());
    // Deployment profiles differ in wiring only, except that `dev` and `prod` require producer
    // signatures and `local` does not: with signing off, the policy sections (and so
    // policy_rev) are identical.
    seen.retain(|(n, _)| n != "lowlatency");
    for (name, p) in &seen {
        assert_eq!(p.ig.signing.required, name != "local", "{name}");
    }
    let revs: Vec<String> = seen
        .iter()
        .map(|(_, p)| {
            let mut p = p.clone();
            p.ig.signing = local.ig.signing.clone();
            p.policy_rev()
        })
        .collect();
    assert!(revs.windows(2).all(|w| w[0] == w[1]), "{revs:?}");
    let dev = seen.iter().find(|(n, _)| n == "dev").unwrap();
    let prod = seen.iter().find(|(n, _)| n == "prod").unwrap();
    assert_eq!(dev.1.policy_rev(), prod.1.policy_rev());
    assert_ne!(dev.1.policy_rev(), local.policy_rev());
    // The embedded copies match the files.
    for (name, text) in config::EMBEDDED {
        let on_disk = std::fs::read_to_string(profiles_dir().join(format!("{name}.toml"))).unwrap();
        assert_eq!(on_disk, text, "embedded {name} profile is stale");
    }
}

#[test]
fn unknown_keys_fail_with_their_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "name = \"x\"\n[ig]\nallowed_lateness = \"5s\"\nbogus_knob = 3\n",
    )
    .unwrap();
    let err = format!("{:#}", config::load(path.to_str().unwrap()).unwrap_err());
    assert!(err.contains("bogus_knob") && err.contains("ig"), "{err}");
    std::fs::write(&path, "[wiring]\nworkers = \"many\"\n").unwrap();
    let err = format!("{:#}", config::load(path.to_str().unwrap()).unwrap_err());
    assert!(err.contains("wiring.workers"), "{err}");
    std::fs::write(&path, "[ig]\nallowed_lateness = \"5 parsecs\"\n").unwrap();
    let err = format!("{:#}", config::load(path.to_str().unwrap()).unwrap_err());
    assert!(err.contains("ig.allowed_lateness"), "{err}");
    let err = format!("{:#}", config::load("no-such-profile").unwrap_err());
    assert!(err.contains("unknown profile"), "{err}");
    let err = format!("{:#}", config::load("/nonexistent/p.toml").unwrap_err());
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn env_overrides_wiring_only() {
    // SAFETY of set_var: this is the only test in this binary reading TIDEMARK__ variables.
    std::env::set_var("TIDEMARK__WIRING__WORKERS", "3");
    std::env::set_var("TIDEMARK__IG__ALLOWED_LATENESS", "1h");
    let p = config::load(profiles_dir().join("local.toml").to_str().unwrap()).unwrap();
    std::env::remove_var("TIDEMARK__WIRING__WORKERS");
    std::env::remove_var("TIDEMARK__IG__ALLOWED_LATENESS");
    assert_eq!(p.wiring.workers, 3);
    assert_eq!(
        p.ig.allowed_lateness,
        std::time::Duration::from_secs(5),
        "policy is not env-overridable"
    );
}

#[test]
fn verify_passes_then_fails_precisely() {
    let tmp = tempfile::tempdir().unwrap();
    let ingress = tmp.path().join("in");
    make_world(
        &ingress,
        &WorldConfig {
            events: 20_000,
            bad_rate: 0.05,
            ..Default::default()
        },
    );
    let data = tmp.path().join("data");
    let mut profile = config::Profile::default();
    profile.archive.receipts_chunk = 2_000;
    profile.archive.interval = std::time::Duration::from_secs(300);
    let out = run_ig(&profile, &ingress, &data, 2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = WriteOnceStore::local(&data, rt.handle().clone()).unwrap();
    let report = verify(&store).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.receipts, 20_000);

    let files = &out.manifest().expect("manifest").files;
    let archive = files
        .iter()
        .find(|f| f.path.starts_with("archive/"))
        .unwrap();
    let receipts = files
        .iter()
        .find(|f| f.path.starts_with("ig/receipts/"))
        .unwrap();
    let quarantine = files
        .iter()
        .find(|f| f.path.starts_with("ig/quarantine/"))
        .unwrap();

    // Deleted.
    let p = data.join(&archive.path);
    let saved = std::fs::read(&p).unwrap();
    std::fs::remove_file(&p).unwrap();
    let r = verify(&store).unwrap();
    assert!(!r.ok());
    assert!(
        r.problems
            .iter()
            .any(|m| m.contains(&archive.path) && m.contains("missing")),
        "{:?}",
        r.problems
    );
    std::fs::write(&p, &saved).unwrap();
    assert!(verify(&store).unwrap().ok());

    // Truncated.
    let p = data.join(&receipts.path);
    let saved = std::fs::read(&p).unwrap();
    std::fs::write(&p, &saved[..saved.len() / 2]).unwrap();
    let r = verify(&store).unwrap();
    assert!(
        r.problems
            .iter()
            .any(|m| m.contains(&receipts.path) && m.contains("truncated")),
        "{:?}",
        r.problems
    );
    std::fs::write(&p, &saved).unwrap();

    // Altered (same size, one byte flipped).
    let p = data.join(&quarantine.path);
    let mut bytes = std::fs::read(&p).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&p, &bytes).unwrap();
    let r = verify(&store).unwrap();
    assert!(
        r.problems
            .iter()
            .any(|m| m.contains(&quarantine.path) && m.contains("sha256")),
        "{:?}",
        r.problems
    );
    bytes[mid] ^= 0xff;
    std::fs::write(&p, &bytes).unwrap();

    // An extra, unlisted file.
    let extra = data
        .join(&archive.path)
        .with_file_name("bucket=999.parquet");
    std::fs::write(&extra, b"junk").unwrap();
    let r = verify(&store).unwrap();
    assert!(
        r.problems
            .iter()
            .any(|m| m.contains("bucket=999") && m.contains("not listed")),
        "{:?}",
        r.problems
    );
}
