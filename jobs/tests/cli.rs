//! The `tidemark` binary: clear errors (not panics) and a working world → run → verify path.

use std::process::Command;

/// The CLI, its metrics endpoint on an ephemeral loopback port (tests run many at once).
fn tidemark() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tidemark"));
    c.env("TIDEMARK__WIRING__METRICS_ADDR", "127.0.0.1:0");
    c
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    text
}

fn run_err(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "expected failure: {text}");
    assert!(!text.contains("panicked"), "panicked: {text}");
    text
}

#[test]
fn world_run_verify_and_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let ingress = tmp.path().join("in");
    let data = tmp.path().join("data");
    let s = run_ok(
        tidemark()
            .args(["world", "--events", "5000", "--seed", "3", "--out"])
            .arg(&ingress),
    );
    assert!(s.contains("5000 records"), "{s}");
    // Same arguments, byte-identical files.
    let again = tmp.path().join("in2");
    run_ok(
        tidemark()
            .args(["world", "--events", "5000", "--seed", "3", "--out"])
            .arg(&again),
    );
    for p in 0..4 {
        let name = format!("partition-{p:05}.log");
        assert_eq!(
            std::fs::read(ingress.join(&name)).unwrap(),
            std::fs::read(again.join(&name)).unwrap()
        );
    }
    let s = run_ok(
        tidemark()
            .args(["run", "--profile", "local", "-w", "2", "--ingress"])
            .arg(format!("file:{}", ingress.display()))
            .arg("--data")
            .arg(&data),
    );
    assert!(s.contains("5000 ingress records"), "{s}");
    let s = run_ok(tidemark().arg("verify").arg("--data").arg(&data));
    assert!(s.contains("verify: OK"), "{s}");

    let e = run_err(
        tidemark()
            .args(["run", "--profile", "nope", "--ingress", "file:/x", "--data"])
            .arg(&data),
    );
    assert!(e.contains("unknown profile"), "{e}");
    let e = run_err(
        tidemark()
            .args(["run", "--ingress", "file:/nonexistent/dir", "--data"])
            .arg(&data),
    );
    assert!(
        e.contains("cannot open ingress") && e.contains("/nonexistent/dir"),
        "{e}"
    );
    let e = run_err(
        tidemark()
            .args(["run", "--ingress", "kafka:x", "--data"])
            .arg(&data),
    );
    assert!(e.contains("unsupported ingress"), "{e}");
    let bad = tmp.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("partition-00000.log"), "12\tok\nnot-a-timestamp\n").unwrap();
    let e = run_err(
        tidemark()
            .args(["run", "--ingress"])
            .arg(format!("file:{}", bad.display()))
            .arg("--data")
            .arg(tmp.path().join("d2")),
    );
    assert!(
        e.contains("unreadable log") && e.contains("offset 1"),
        "{e}"
    );
    let e = run_err(
        tidemark()
            .arg("verify")
            .arg("--data")
            .arg(tmp.path().join("nothing")),
    );
    assert!(e.contains("does not exist"), "{e}");
}

/// `tidemark … | head`: a closed stdout ends the program quietly (SIGPIPE, as any Unix tool),
/// not with a panic message.
#[test]
fn a_closed_stdout_ends_quietly() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let tmp = tempfile::tempdir().unwrap();
    let ingress = tmp.path().join("in");
    let data = tmp.path().join("data");
    run_ok(
        tidemark()
            .args(["world", "--events", "2000", "--out"])
            .arg(&ingress),
    );
    run_ok(
        tidemark()
            .args(["run", "--ingress"])
            .arg(format!("file:{}", ingress.display()))
            .arg("--data")
            .arg(&data),
    );
    // `audit` of a decision prints a long JSON document; read one byte and close the pipe.
    let id = tidemark_audit_id(&data);
    let mut child = tidemark()
        .args(["audit", "--data"])
        .arg(&data)
        .arg(&id)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut one = [0u8; 1];
    stdout.read_exact(&mut one).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
        "{:?}: {err}",
        out.status
    );
}

fn tidemark_audit_id(data: &std::path::Path) -> String {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = tidemark_sinks::WriteOnceStore::local(data, rt.handle().clone()).unwrap();
    let rows = tidemark_jobs::replay::read_audit(&store).unwrap();
    rows.into_values()
        .flatten()
        .next()
        .expect("a decision")
        .event_id
}

#[test]
fn dataset_backfill_and_gov_commands() {
    let tmp = tempfile::tempdir().unwrap();
    let ingress = tmp.path().join("in");
    let data = tmp.path().join("data");
    run_ok(
        tidemark()
            .args(["world", "--events", "6000", "--seed", "4", "--out"])
            .arg(&ingress),
    );
    run_ok(
        tidemark()
            .args(["run", "--profile", "local", "--ingress"])
            .arg(format!("file:{}", ingress.display()))
            .arg("--data")
            .arg(&data),
    );
    // RFC 3339 and epoch-ms arguments; the id is printed, verify certifies every row.
    let build = |extra: &[&str]| {
        run_ok(
            tidemark()
                .args(["dataset", "build", "--data"])
                .arg(&data)
                .args(["--from", "2026-01-01T00:00:00Z", "--to", "1767229200000"])
                .args(["--labels-as-of", "2026-01-01T01:00:00Z"])
                .args(extra),
        )
    };
    let s = build(&["--split-at", "2026-01-01T00:00:30Z"]);
    let id = s
        .split_whitespace()
        .skip_while(|w| *w != "dataset")
        .nth(1)
        .unwrap()
        .trim_end_matches(':')
        .to_owned();
    assert!(s.contains("zero-skew certificate: rows="), "{s}");
    assert!(s.contains("mismatches=0"), "{s}");
    assert!(build(&["--split-at", "2026-01-01T00:00:30Z", "-w", "2"]).contains("already built"));
    let s = run_ok(
        tidemark()
            .args(["dataset", "verify", "--data"])
            .arg(&data)
            .arg(&id),
    );
    assert!(s.contains("mismatches=0") && s.contains("OK"), "{s}");
    let e = run_err(
        tidemark()
            .args(["dataset", "verify", "--data"])
            .arg(&data)
            .arg("0000000000000000"),
    );
    assert!(e.contains("no dataset manifest"), "{e}");
    let e = run_err(
        tidemark()
            .args(["dataset", "build", "--data"])
            .arg(&data)
            .args(["--from", "5", "--to", "5", "--labels-as-of", "yesterday"]),
    );
    assert!(e.contains("not a time"), "{e}");

    // A backfill from a declaration file, twice; the facts in order.
    let decl = tmp.path().join("decl.toml");
    std::fs::write(
        &decl,
        "id = \"again\"\npurpose = \"same revision, recomputed\"\nfrom = 1767225600000\nto = \"2026-01-01T00:01:00Z\"\nfeatures = \"local\"\n",
    )
    .unwrap();
    let declare = || {
        run_ok(
            tidemark()
                .args(["backfill", "declare", "--data"])
                .arg(&data)
                .arg(&decl),
        )
    };
    assert!(declare().contains("declared"));
    assert!(declare().contains("already declared"));
    let run = || {
        run_ok(
            tidemark()
                .args(["backfill", "run", "--data"])
                .arg(&data)
                .arg("again"),
        )
    };
    assert!(run().contains("complete; receipt gov/backfills/again/receipt.json"));
    assert!(run().contains("already complete"));
    let s = run_ok(tidemark().args(["gov", "list", "--data"]).arg(&data));
    let kinds: Vec<&str> = s
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(
        kinds,
        [
            "policy.activated",
            "backfill.declared",
            "backfill.completed",
            "facts"
        ],
        "{s}"
    );
}

/// `wiring.slow_activation` logs operator activations that held a worker longer than the
/// threshold, by operator name (never the dataflow's own scope); off by default.
#[test]
fn slow_activations_are_logged_by_operator_when_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let ingress = tmp.path().join("in");
    run_ok(
        tidemark()
            .args(["world", "--events", "2000", "--seed", "4", "--out"])
            .arg(&ingress),
    );
    let slow_lines = |threshold: Option<&str>, data: &str| -> Vec<serde_json::Value> {
        let mut cmd = tidemark();
        cmd.env("RUST_LOG", "tidemark::slow=warn")
            .args(["--log-format", "json", "run", "--ingress"])
            .arg(format!("file:{}", ingress.display()))
            .arg("--data")
            .arg(tmp.path().join(data));
        if let Some(t) = threshold {
            cmd.env("TIDEMARK__WIRING__SLOW_ACTIVATION", t);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        stderr
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["message"] == "slow operator activation")
            .collect()
    };
    // A threshold of 1 ns: every activation is slow.
    let lines = slow_lines(Some("1ns"), "all");
    let ops: std::collections::BTreeSet<String> = lines
        .iter()
        .map(|v| v["operator"].as_str().unwrap_or_default().to_owned())
        .collect();
    for op in [
        "IngressSource",
        "KeyedWindows",
        "DecisionFabric",
        "WriteArchive",
    ] {
        assert!(ops.contains(op), "no activation of {op} logged: {ops:?}");
    }
    assert!(!ops.contains("Dataflow"), "{ops:?}");
    assert!(lines.iter().all(|v| v["ms"].as_f64().is_some()));
    // Off by default, and a threshold no activation reaches logs nothing.
    assert!(slow_lines(None, "off").is_empty());
    assert!(slow_lines(Some("1h"), "hour").is_empty());
}
