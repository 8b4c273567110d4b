//! Online over Kafka (a real tansu broker on loopback) against offline replay and the file
//! log: byte-identical primary truths, identical snapshot hashes and graph versions, decisions
//! read back from `fp.bus.decisions.v1` equal to the replay's, complete output topics, and a
//! broker restart in the middle of a run survived without lost or duplicated decisions.

use std::collections::{BTreeMap, BTreeSet};

use tidemark_jobs::broker::topics;
use tidemark_jobs::demo::decisions_from_topic;
use tidemark_jobs::kafka::read_topic;
use tidemark_jobs::publish::PointerEvent;
use tidemark_jobs::replay::replay;
use tidemark_jobs::world::WorldConfig;
use tidemark_tests::{
    assert_same_truths, kafka_client, make_world, read_archive, read_audit, read_receipts,
    read_tree, run_ig, KafkaFixture,
};

fn world(events: u64, seed: u64) -> WorldConfig {
    WorldConfig {
        events,
        seed,
        partitions: 4,
        bad_rate: 0.02,
        // A slow simulated clock, so delayed labels and posture changes (control events)
        // fall inside a small world.
        rate_per_sec: 20.0,
        ..Default::default()
    }
}

#[test]
fn online_over_kafka_equals_replay_file_log_and_topics() {
    let k = KafkaFixture::start();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = world(25_000, 21);
    k.produce(&cfg);

    // Online, 1 process x 1 worker, publishing.
    let online = tmp.path().join("online");
    let out = k.run(&online, 1, true);
    assert_eq!(out.manifest().expect("manifest").totals.total(), 25_000);
    assert!(
        out.manifest().expect("manifest").totals.quarantined > 0
            && out.manifest().expect("manifest").totals.duplicate > 0
    );
    let audit = read_audit(&online);
    assert!(audit.len() > 15_000, "{} decisions", audit.len());

    // The basis is the Kafka offset range of every ingress partition.
    let mut basis = out.manifest().expect("manifest").basis.clone();
    basis.sort();
    let hw = tidemark_sources::KafkaSource::new(
        k.conn.clone(),
        topics::INGRESS,
        tidemark_sources::KafkaStart::Beginning,
        tidemark_sources::KafkaEnd::Latest,
    )
    .high_watermarks()
    .unwrap();
    for b in &basis {
        assert_eq!((b.start, b.end), (0, hw[&b.partition]), "basis {b:?}");
    }

    // Replay from the archive: MATCH, and byte-identical audit and snapshot trees.
    let replayed = tmp.path().join("replay");
    let r = replay(&k.profile, &online, &replayed, 0, None, 1).unwrap();
    assert!(r.divergence.is_none(), "{:?}", r.divergence);
    assert_eq!(r.compared as usize, audit.len());
    for sub in ["dla", "ofp"] {
        let (a, b) = (read_tree(&online, sub), read_tree(&replayed, sub));
        assert!(!a.is_empty(), "{sub} empty");
        assert_eq!(a, b, "{sub} differs between online and replay");
    }
    let graph_versions: BTreeSet<_> = audit.iter().map(|a| a.graph_version.clone()).collect();
    assert!(
        graph_versions.len() > 1,
        "graph versions {graph_versions:?}"
    );

    // Decisions read back from the topic equal the replay's decisions, field by field.
    let from_topic = decisions_from_topic(&k.conn).unwrap();
    assert_eq!(from_topic.len(), audit.len());
    assert!(
        from_topic == read_audit(&replayed),
        "decisions topic differs from replay"
    );

    // Traffic and control topics hold exactly the admitted envelopes, keyed by partition_key.
    let archive = read_archive(&online);
    let mut admitted: Vec<(Vec<u8>, Vec<u8>)> = archive
        .iter()
        .map(|a| {
            (
                a.partition_key.clone().into_bytes(),
                a.envelope.clone().into_bytes(),
            )
        })
        .collect();
    admitted.sort();
    let mut published = Vec::new();
    let (mut control, mut facts) = (0, Vec::new());
    for topic in [topics::TRAFFIC, topics::CONTROL] {
        for rec in read_topic(&k.conn, topic).unwrap() {
            let v: serde_json::Value = serde_json::from_slice(&rec.bytes).unwrap();
            // The run's own governance fact (SPEC §11), not an admitted envelope.
            if v["producer"] == "governance" {
                assert_eq!(topic, topics::CONTROL);
                facts.push(v["payload"]["kind"].as_str().unwrap().to_owned());
                continue;
            }
            let key = v["partition_key"].as_str().unwrap().as_bytes().to_vec();
            let is_control = v["event_type"]
                .as_str()
                .and_then(|t| t.parse::<tidemark_operators::ingest::EventType>().ok())
                .expect("an admitted event type")
                .is_control();
            assert_eq!(is_control, topic == topics::CONTROL, "{v}");
            control += usize::from(is_control);
            published.push((key, rec.bytes));
        }
    }
    published.sort();
    assert!(control > 0, "no control events published");
    assert_eq!(
        facts,
        ["policy.activated"],
        "the run's policy activation, once"
    );
    assert!(
        published == admitted,
        "traffic+control topics differ from the archive"
    );

    // The audit topic points at every file of the manifest with its sha256, and at every
    // snapshot.
    let mut files = BTreeMap::new();
    let mut snapshots = 0;
    for rec in read_topic(&k.conn, topics::AUDIT).unwrap() {
        match serde_json::from_slice::<PointerEvent>(&rec.bytes).unwrap() {
            PointerEvent::File(f) => {
                files.insert(f.path.clone(), f.sha256.clone());
            }
            PointerEvent::Snapshot(_) => snapshots += 1,
        }
    }
    for f in &out.manifest().expect("manifest").files {
        assert_eq!(
            files.get(&f.path),
            Some(&f.sha256),
            "pointer for {}",
            f.path
        );
    }
    assert_eq!(snapshots, out.snapshots);

    // The file log of the same world gives the same primary truths as the Kafka run.
    let log = tmp.path().join("log");
    make_world(&log, &cfg);
    let from_file = tmp.path().join("from-file");
    run_ig(&k.profile, &log, &from_file, 1);
    assert_same_truths(&online, &from_file, "kafka vs file log");

    // 1 process x 2 workers from the same topic: identical.
    let two = tmp.path().join("two-workers");
    k.run(&two, 2, false);
    assert_same_truths(&online, &two, "1x1 vs 1x2");
}

#[test]
fn broker_restart_mid_run_loses_and_duplicates_nothing() {
    let mut k = KafkaFixture::start();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = world(60_000, 5);
    k.produce(&cfg);
    let data = tmp.path().join("online");
    let (profile, ingress) = (
        k.profile.clone(),
        k.ingress(tidemark_sources::KafkaEnd::Latest),
    );
    let opts = tidemark_jobs::run::RunOptions {
        publish: Some(k.conn.clone()),
        ..tidemark_jobs::run::RunOptions::threads(1)
    };
    let outcome = std::thread::scope(|s| {
        let h = s.spawn(|| tidemark_jobs::run::run_with(&profile, &ingress, &data, &opts));
        // Restart once the run is visibly under way (receipt files are being written).
        let t0 = std::time::Instant::now();
        while read_tree(&data, "ig/receipts").is_empty() && t0.elapsed().as_secs() < 60 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(
            !h.is_finished(),
            "run finished before the restart; make the world larger"
        );
        k.broker.restart().expect("restart broker");
        h.join().expect("run thread")
    });
    let out = outcome
        .expect("the run survives a broker restart")
        .expect("outcome");
    assert_eq!(out.manifest().expect("manifest").totals.total(), 60_000);
    let receipts = read_receipts(&data);
    assert_eq!(receipts.len(), 60_000);
    let offsets: BTreeSet<_> = receipts.iter().map(|r| r.coord).collect();
    assert_eq!(offsets.len(), 60_000, "a receipt per ingress record");

    // Same truths as an undisturbed run of the same topic.
    let calm = tmp.path().join("calm");
    k.run(&calm, 1, false);
    assert_same_truths(&data, &calm, "restarted vs undisturbed");

    // The decisions topic holds every decision exactly once.
    let topic = decisions_from_topic(&k.conn).unwrap();
    let audit = read_audit(&data);
    let ids: BTreeSet<_> = topic.iter().map(|a| a.decision_id.clone()).collect();
    assert_eq!(ids.len(), topic.len(), "duplicated decisions on the topic");
    assert!(
        topic == audit,
        "decisions topic ({}) differs from the audit log ({})",
        topic.len(),
        audit.len()
    );
}

#[test]
fn third_party_python_client_produces_ingress_and_reads_decisions() {
    let k = KafkaFixture::start();
    let tmp = tempfile::tempdir().unwrap();
    let addr = k.broker.addr();
    let produced = kafka_client(&["produce", &addr, "400"]);
    assert_eq!(produced["produced"], 400);
    assert_eq!(produced["malformed"], 3);

    let data = tmp.path().join("online");
    let out = k.run(&data, 1, true);
    assert_eq!(out.manifest().expect("manifest").totals.total(), 403);
    assert_eq!(out.manifest().expect("manifest").totals.admitted, 400);
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for r in read_receipts(&data) {
        if let Some(code) = r.reason {
            *reasons.entry(code.as_str().to_owned()).or_default() += 1;
        }
    }
    let expected: BTreeMap<String, usize> = [
        ("MALFORMED_JSON", 1),
        ("MISSING_FIELD", 1),
        ("UNKNOWN_EVENT_TYPE", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(reasons, expected);

    // The Python consumer reads the same decisions DLA wrote.
    let read = kafka_client(&["decisions", &addr]);
    let mut audit: Vec<(String, String, String)> = read_audit(&data)
        .into_iter()
        .map(|a| (a.event_id, a.decision.to_string(), a.decision_id))
        .collect();
    audit.sort();
    assert_eq!(audit.len(), 400);
    let got: Vec<(String, String, String)> =
        serde_json::from_value(read["decisions"].clone()).unwrap();
    assert_eq!(got, audit);
    let intents: u64 = read_audit(&data)
        .iter()
        .map(|a| {
            serde_json::from_str::<Vec<serde_json::Value>>(&a.action_intents)
                .unwrap()
                .len() as u64
        })
        .sum();
    assert_eq!(read["intents"].as_u64(), Some(intents));
}

fn login(i: u64, t: u64) -> Vec<u8> {
    format!(
        r#"{{"event_id":"idle-{i}","event_type":"account.login.v1","ts_utc":"{}","manifest_fingerprint":"{}","schema_version":1,"producer":"auth-service","payload":{{"account_id":"acct-idle-{i}","device_id":"dev-{i}","ip":"10.1.1.{}","success":true}}}}"#,
        tidemark_operators::time::fmt_rfc3339_millis(t),
        "cd".repeat(32),
        i % 250
    )
    .into_bytes()
}

/// SPEC §3 over Kafka: a silent partition stops holding the frontier back after
/// `idle_timeout` (wall clock); a record that then arrives below the frontier is late, and the
/// receipt records it. With a long idle_timeout the same record is on time.
#[test]
fn idle_partition_releases_the_frontier_and_a_straggler_is_late() {
    let k = KafkaFixture::start();
    let tmp = tempfile::tempdir().unwrap();
    let t0 = 1_767_225_600_000u64;
    let mut profile = k.profile.clone();
    profile.ig.idle_timeout = std::time::Duration::from_millis(500);
    let ends: BTreeMap<u32, u64> = [(0, 30), (1, 0), (2, 0), (3, 1)].into_iter().collect();
    let ingress = tidemark_jobs::run::Ingress::Kafka {
        conn: k.conn.clone(),
        topic: topics::INGRESS.to_owned(),
        start: tidemark_sources::KafkaStart::Beginning,
        end: tidemark_sources::KafkaEnd::Offsets(ends),
    };
    let producer =
        tidemark_sinks::kafka::KafkaProducer::new(&k.conn.client_config()).expect("producer");
    let data = tmp.path().join("idle");
    std::thread::scope(|s| {
        let run = s.spawn(|| {
            tidemark_jobs::run::run_with(
                &profile,
                &ingress,
                &data,
                &tidemark_jobs::run::RunOptions::threads(1),
            )
        });
        // Partition 0 is busy: 30 records, event time 1 s apart, one every 100 ms.
        for i in 0..30u64 {
            let t = t0 + i * 1000;
            producer
                .send(
                    topics::INGRESS,
                    Some(0),
                    b"k0",
                    &login(i, t),
                    Some(t as i64),
                )
                .unwrap();
            producer.finish(std::time::Duration::from_secs(10)).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        // Partition 3 was silent for > idle_timeout; its first record is far behind.
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let t = t0 + 5_000;
        producer
            .send(
                topics::INGRESS,
                Some(3),
                b"k3",
                &login(99, t),
                Some(t as i64),
            )
            .unwrap();
        producer.finish(std::time::Duration::from_secs(10)).unwrap();
        run.join().expect("run thread").expect("run");
    });
    let receipts = read_receipts(&data);
    assert_eq!(receipts.len(), 31);
    let straggler = receipts.iter().find(|r| r.coord.partition == 3).unwrap();
    assert_eq!(
        straggler.reason.map(|c| c.as_str()),
        Some("LATE_EVENT"),
        "{straggler:?}"
    );

    // Same topic, an idle_timeout longer than the run: partition 3 holds the frontier at its
    // (empty) watermark, so the same record is on time.
    let mut patient = k.profile.clone();
    patient.ig.idle_timeout = std::time::Duration::from_secs(3600);
    let data2 = tmp.path().join("patient");
    tidemark_jobs::run::run_with(
        &patient,
        &ingress,
        &data2,
        &tidemark_jobs::run::RunOptions::threads(1),
    )
    .unwrap();
    let receipts = read_receipts(&data2);
    let straggler = receipts.iter().find(|r| r.coord.partition == 3).unwrap();
    assert_eq!(straggler.status.as_str(), "ADMITTED", "{straggler:?}");
}

#[test]
fn producer_wait_ready_waits_for_the_producer_id_and_fails_clearly_without_a_broker() {
    use std::time::Duration;
    use tidemark_sinks::kafka::KafkaProducer;
    let k = KafkaFixture::start();
    // On a live broker the idempotent producer gets its id (librdkafka asks on a 500 ms timer
    // after creation), and a record sent then is acknowledged.
    let p = KafkaProducer::new(&k.conn.client_config()).unwrap();
    p.wait_ready(Duration::from_secs(20))
        .expect("a producer id from the local broker");
    p.send(topics::CONTROL, Some(0), b"k", b"v", None).unwrap();
    let d = p.finish(Duration::from_secs(30)).unwrap();
    assert_eq!((d.sent, d.delivered, d.failed), (1, 1, 0));

    // With nothing listening, the wait ends at its timeout with an error that says why.
    let port = tidemark_jobs::broker::free_port().unwrap();
    let dead = tidemark_sources::KafkaConn::new(format!("127.0.0.1:{port}"));
    let p = KafkaProducer::new(&dead.client_config()).unwrap();
    let e = p
        .wait_ready(Duration::from_secs(2))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no producer id"), "{e}");
    // And a flush there ends at its timeout, saying how many records wait.
    p.send(topics::CONTROL, Some(0), b"k", b"v", None).unwrap();
    let e = p.flush(Duration::from_secs(1)).unwrap_err().to_string();
    assert!(e.contains("1 records still unacknowledged"), "{e}");
}
