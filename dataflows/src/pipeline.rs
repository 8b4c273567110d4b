//! IEG → OFP → DF → DLA as one function from the admitted stream to audit records and
//! snapshot records. The online run feeds it from IG; replays feed it from the archive.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::core::OkErr;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::{Broadcast, Map, ToStream};
use timely::dataflow::operators::Concat;
use timely::dataflow::StreamVec;

use tidemark_operators::decision::{
    AuditRecord, DecisionDetail, DecisionTag, Posture, SnapshotRecord,
};
use tidemark_operators::hashing::{bucket_of, sha256_hex};
use tidemark_operators::ingest::{Admitted, EventType};
use tidemark_operators::keyed::{global_max, KeyedWindows, WindowOutput};
use tidemark_operators::time::millis;
use tidemark_operators::{Failures, LogicalTime, Pending, SourceCoord};

use crate::df::{action_intents, decision_id, score, DfPolicy, LoadedBundle, GRAPH_FEATURES};
use crate::envelope::parse_rfc3339_millis;
use crate::event::{Event, EventSchema, FieldId};
use crate::ieg::{graph_inputs, GraphOutput, GraphPlan, GraphPolicy, IdentityGraph};
use crate::ofp::{FeatureDef, FeatureSpec, OfpPolicy};

/// The event type that triggers decisions.
pub const DECISION_TYPE: EventType = EventType::Authorization;

/// The event type that sets the posture.
pub const POSTURE_TYPE: EventType = EventType::Posture;

/// Whether an archived event is needed to decide from `warm` on: events within the windows
/// before it (`warm` = the first decision time less the longest window), and every posture
/// (the posture in force may have been set at any earlier time).
pub fn needed_from(a: &Admitted, warm: LogicalTime) -> bool {
    a.logical_time >= warm || a.event_type == POSTURE_TYPE
}

/// Everything the decision stages need.
#[derive(Clone, Debug)]
pub struct DecisionConfig {
    /// Feature definitions.
    pub features: Arc<Vec<FeatureDef>>,
    /// OFP policy.
    pub ofp: OfpPolicy,
    /// Graph policy.
    pub graph: GraphPolicy,
    /// DF policy.
    pub df: DfPolicy,
    /// The active bundle.
    pub bundle: Arc<LoadedBundle>,
    /// Policy revision cited in every decision.
    pub policy_rev: String,
    /// Feature definition revision cited in snapshots.
    pub feature_rev: String,
    /// Audit buckets.
    pub audit_buckets: u32,
    /// Emit decisions and snapshots only for logical time `>= emit_from` (replay warm-up).
    pub emit_from: LogicalTime,
    /// Emit only for logical time `< emit_until`; `None` = unbounded.
    pub emit_until: Option<LogicalTime>,
    /// Also emit a [`DecisionDetail`] per decision (every feature of the revision, the entity
    /// keys, typed): what datasets are built from. Off for the online run and replays.
    pub details: bool,
}

impl DecisionConfig {
    /// How far back state reaches: the longest feature window or edge TTL (ms).
    pub fn max_window_ms(&self) -> u64 {
        let f = self
            .features
            .iter()
            .map(|d| millis(d.window))
            .max()
            .unwrap_or(0);
        f.max(if self.graph.enabled {
            millis(self.graph.edge_ttl)
        } else {
            0
        })
    }

    /// The entity key fields the features use, in order of first appearance in the
    /// definitions: the key columns of a [`DecisionDetail`].
    pub fn key_fields(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for d in self.features.iter() {
            if !out.contains(&d.key) {
                out.push(d.key.clone());
            }
        }
        out
    }

    fn in_range(&self, t: LogicalTime) -> bool {
        t >= self.emit_from && self.emit_until.is_none_or(|u| t < u)
    }
}

/// The outputs of [`decide`].
pub struct DecisionOutputs<'scope> {
    /// One audit record per decision.
    pub audit: StreamVec<'scope, LogicalTime, AuditRecord>,
    /// Snapshot records (on worker 0).
    pub snapshots: StreamVec<'scope, LogicalTime, SnapshotRecord>,
    /// One detail per decision when [`DecisionConfig::details`] is set, else empty.
    pub details: StreamVec<'scope, LogicalTime, DecisionDetail>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Trigger {
    time: LogicalTime,
    event_id: String,
    coord: SourceCoord,
    record_ts: u64,
    ts_utc: String,
    trace_id: String,
    run_id: String,
    scenario_id: String,
    amount_minor: i64,
    /// Entity key values (only when details are on).
    keys: Vec<Option<String>>,
}

/// The parts of one decision, routed to the worker holding its trigger: O(distinct keys)
/// messages per decision (one per feature group, one from the graph), not one per feature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Gather {
    Trigger(DecisionTag, Trigger),
    Features {
        tag: DecisionTag,
        time: LogicalTime,
        group: u16,
        values: Vec<Option<i64>>,
    },
    Graph {
        tag: DecisionTag,
        time: LogicalTime,
        size: i64,
        cards: i64,
        version: String,
    },
}

impl Gather {
    fn key(&self) -> (DecisionTag, LogicalTime) {
        match self {
            Gather::Trigger(tag, t) => (*tag, t.time),
            Gather::Features { tag, time, .. } | Gather::Graph { tag, time, .. } => (*tag, *time),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum SnapIn {
    Part {
        time: LogicalTime,
        digest: u128,
        keys: u64,
        max_seen: LogicalTime,
    },
    Graph {
        time: LogicalTime,
        version: String,
        entities: u64,
    },
}

/// Builds IEG → OFP → DF → DLA over `admitted`.
pub fn decide<'scope>(
    admitted: StreamVec<'scope, LogicalTime, Admitted>,
    cfg: Arc<DecisionConfig>,
    failures: Failures,
) -> DecisionOutputs<'scope> {
    let scope = admitted.scope();
    let origin = scope.index() as u32;
    // Every field and type the stages read, resolved once.
    let mut schema = EventSchema::default();
    let spec = FeatureSpec::new(cfg.features.clone(), &mut schema);
    let graph_plan = GraphPlan::new(&cfg.graph, &mut schema);
    let (decision_type, posture_type) = (
        schema.ty(DECISION_TYPE.as_str()),
        schema.ty(POSTURE_TYPE.as_str()),
    );
    let (amount_field, posture_field) = (schema.field("amount_minor"), schema.field("posture"));
    let key_fields: Vec<FieldId> = if cfg.details {
        cfg.key_fields().iter().map(|k| schema.field(k)).collect()
    } else {
        Vec::new()
    };
    // Parsed once and shared (reference-counted) by the consumers below instead of cloned;
    // a decision event gets its tag here, once, for all of its parts.
    let c0 = cfg.clone();
    let mut seq = 0u64;
    let events = admitted.flat_map(move |a| {
        let e = match Event::parse_owned(a, &schema) {
            Ok(e) => Some(std::rc::Rc::new(e)),
            Err(event_id) => {
                failures.push(format!(
                    "bug: admitted event {event_id} has a non-canonical envelope"
                ));
                None
            }
        };
        e.map(|e| {
            let tag = (e.is(decision_type) && c0.in_range(e.time)).then(|| {
                seq += 1;
                DecisionTag { origin, seq }
            });
            (e, tag)
        })
    });
    let bound = global_max(events.clone().map(|(e, _)| e.time));
    let snapshot_ms = millis(cfg.ofp.snapshot_interval);

    // OFP: one window input per (event, feature group).
    let s1 = spec.clone();
    let window_out = events
        .clone()
        .flat_map(move |(e, tag)| {
            let mut out = Vec::new();
            s1.inputs(&e, tag, &mut out);
            out
        })
        .keyed_windows(spec.clone(), snapshot_ms, bound.clone());
    let (answers, snap_parts) = window_out.ok_err(|o| match o {
        WindowOutput::Answer(a) => Ok(Gather::Features {
            tag: a.tag,
            time: a.time,
            group: a.group,
            values: a.values,
        }),
        WindowOutput::Snapshot(p) => Err(SnapIn::Part {
            time: p.time,
            digest: p.digest,
            keys: p.keys,
            max_seen: p.max_seen,
        }),
    });

    // IEG.
    let (c2, gp) = (cfg.clone(), cfg.graph.clone());
    let graph_out = events
        .clone()
        .flat_map(move |(e, tag)| {
            let mut out = Vec::new();
            if c2.graph.enabled {
                graph_inputs(&graph_plan, &e, tag, &mut out);
            }
            out
        })
        .identity_graph(&gp, snapshot_ms, bound);
    let (graph_answers, versions) = graph_out.ok_err(|o| match o {
        GraphOutput::Answer {
            tag,
            time,
            size,
            cards,
            version,
        } => Ok(Gather::Graph {
            tag,
            time,
            size,
            cards,
            version,
        }),
        GraphOutput::Version {
            time,
            version,
            entities,
        } => Err(SnapIn::Graph {
            time,
            version,
            entities,
        }),
    });

    // Decision triggers and postures.
    let triggers = events.clone().flat_map(move |(e, tag)| {
        tag.map(|tag| {
            Gather::Trigger(
                tag,
                Trigger {
                    time: e.time,
                    amount_minor: e.int(amount_field).unwrap_or(0),
                    event_id: e.event_id.clone(),
                    coord: e.coord,
                    record_ts: e.record_ts,
                    ts_utc: e.ts_utc().to_owned(),
                    trace_id: e.trace_id().to_owned(),
                    run_id: e.run_id().to_owned(),
                    scenario_id: e.scenario_id().to_owned(),
                    keys: key_fields
                        .iter()
                        .map(|f| e.field(*f).map(str::to_owned))
                        .collect(),
                },
            )
        })
    });
    let postures = events
        .flat_map(move |(e, _)| {
            e.is(posture_type).then(|| {
                (
                    e.time,
                    e.coord,
                    // IG admitted only the three spellings.
                    e.field(posture_field)
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(Posture::Normal),
                )
            })
        })
        .broadcast();

    let parts = triggers.concat(answers).concat(graph_answers);
    let (audit, details) = if cfg.details {
        let (audit, details) =
            gather::<Result<AuditRecord, Box<DecisionDetail>>>(parts, postures, spec, cfg.clone())
                .ok_err(|d| d);
        (audit, details.map(|d| *d))
    } else {
        // The online run and replays pay nothing for details.
        let audit = gather::<AuditRecord>(parts, postures, spec, cfg.clone());
        (audit, Vec::<DecisionDetail>::new().to_stream(scope))
    };
    let snapshots = combine_snapshots(snap_parts.concat(versions), cfg);
    DecisionOutputs {
        audit,
        snapshots,
        details,
    }
}

type Postures = Vec<(LogicalTime, SourceCoord, Posture)>;

/// What one decision has gathered: its trigger, OFP values (one per feature), and
/// (size, cards, graph_version).
type Gathered = (
    Option<Trigger>,
    Vec<Option<i64>>,
    Option<(i64, i64, String)>,
);

/// What the decision fabric emits per decision: its audit record alone, or (for datasets)
/// the audit record and its detail.
trait GatherOut: timely::ExchangeData {
    /// Appends the outputs of one decision.
    fn emit(audit: AuditRecord, detail: Option<DecisionDetail>, out: &mut Vec<Self>);
    /// The decision's event id (outputs of one logical time sort by it).
    fn event_id(&self) -> &str;
}

impl GatherOut for AuditRecord {
    fn emit(audit: AuditRecord, _: Option<DecisionDetail>, out: &mut Vec<Self>) {
        out.push(audit);
    }
    fn event_id(&self) -> &str {
        &self.event_id
    }
}

impl GatherOut for Result<AuditRecord, Box<DecisionDetail>> {
    fn emit(audit: AuditRecord, detail: Option<DecisionDetail>, out: &mut Vec<Self>) {
        out.push(Ok(audit));
        out.extend(detail.map(|d| Err(Box::new(d))));
    }
    fn event_id(&self) -> &str {
        match self {
            Ok(a) => &a.event_id,
            Err(d) => &d.event_id,
        }
    }
}

fn gather<'scope, O: GatherOut>(
    input: StreamVec<'scope, LogicalTime, Gather>,
    postures: StreamVec<'scope, LogicalTime, (LogicalTime, SourceCoord, Posture)>,
    spec: FeatureSpec,
    cfg: Arc<DecisionConfig>,
) -> StreamVec<'scope, LogicalTime, O> {
    let pact = Exchange::new(|g: &Gather| g.key().0.route());
    input.binary_frontier(
        postures,
        pact,
        Pipeline,
        "DecisionFabric",
        move |_cap, _info| {
            let mut pending: Pending<Gather> = Pending::new();
            let mut known: Postures = Vec::new();
            let b = &cfg.bundle.bundle;
            let run = RunWide::of(&cfg);
            let index: Vec<Option<usize>> = b
                .features
                .iter()
                .map(|f| cfg.features.iter().position(|d| d.name == f.name))
                .collect();
            let cfg = cfg.clone();
            move |(in1, f1), (in2, f2), output| {
                in1.for_each_stamp(|cap, data| {
                    let Some(cap) = cap.retain_least(output.output_index()) else {
                        return;
                    };
                    pending.stash_all(&cap, data, |g| g.key().1);
                });
                in2.for_each_stamp(|_cap, data| {
                    for batch in data {
                        known.append(batch);
                    }
                    known.sort();
                });
                let out_cap = pending.capability().cloned();
                let mut out: Vec<O> = Vec::new();
                while let Some((t, items)) =
                    pending.pop_if(|t| !f1.less_equal(&t) && !f2.less_equal(&t))
                {
                    let posture = match known.partition_point(|p| p.0 <= t) {
                        0 => Posture::Normal,
                        i => known[i - 1].2,
                    };
                    let mut by_tag: BTreeMap<DecisionTag, Gathered> = BTreeMap::new();
                    let n = cfg.features.len();
                    for g in items {
                        let e = by_tag
                            .entry(g.key().0)
                            .or_insert_with(|| (None, vec![None; n], None));
                        match g {
                            Gather::Trigger(_, tr) => e.0 = Some(tr),
                            Gather::Features { group, values, .. } => {
                                for (&fi, v) in spec.group_features(group).iter().zip(values) {
                                    if let Some(slot) = e.1.get_mut(fi as usize) {
                                        *slot = v;
                                    }
                                }
                            }
                            Gather::Graph {
                                size,
                                cards,
                                version,
                                ..
                            } => e.2 = Some((size, cards, version)),
                        }
                    }
                    let first = out.len();
                    for (_tag, (trigger, fvals, graph)) in by_tag {
                        let Some(tr) = trigger else { continue };
                        let (audit, detail) =
                            audit_record(&cfg, &run, &index, tr, fvals, graph, posture);
                        O::emit(audit, detail, &mut out);
                    }
                    // Within a time, in event_id order (independent of arrival order).
                    out[first..].sort_by(|a, b| a.event_id().cmp(b.event_id()));
                }
                pending.settle();
                // One message per activation, not one per logical time.
                if let Some(c) = out_cap.filter(|_| !out.is_empty()) {
                    output.session(&c).give_iterator(out.drain(..));
                }
            }
        },
    )
}

/// Compact JSON through serde (the canonical form of the audit's list-valued columns).
fn json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// One action intent as it appears in the audit record.
#[derive(Serialize)]
struct Intent<'a> {
    action: &'a str,
    idempotency_key: &'a str,
}

/// The audit columns every record of a run shares, one string each.
struct RunWide {
    bundle_id: Arc<str>,
    bundle_version: Arc<str>,
    bundle_digest: Arc<str>,
    policy_rev: Arc<str>,
}

impl RunWide {
    fn of(cfg: &DecisionConfig) -> Self {
        RunWide {
            bundle_id: cfg.bundle.bundle.id.as_str().into(),
            bundle_version: cfg.bundle.bundle.version.as_str().into(),
            bundle_digest: cfg.bundle.digest.as_str().into(),
            policy_rev: cfg.policy_rev.as_str().into(),
        }
    }
}

fn audit_record(
    cfg: &DecisionConfig,
    run: &RunWide,
    index: &[Option<usize>],
    tr: Trigger,
    fvals: Vec<Option<i64>>,
    graph: Option<(i64, i64, String)>,
    posture: Posture,
) -> (AuditRecord, Option<DecisionDetail>) {
    let b = &cfg.bundle.bundle;
    let mut mask = Vec::new();
    let values: Vec<Option<i64>> = b
        .features
        .iter()
        .zip(index)
        .map(|(f, idx)| match f.name.as_str() {
            "cluster_size" | "cluster_cards" if posture == Posture::Degraded => {
                mask.push(f.name.clone());
                None
            }
            "cluster_size" => graph.as_ref().map(|g| g.0),
            "cluster_cards" => graph.as_ref().map(|g| g.1),
            _ => idx.and_then(|i| fvals.get(i).copied().flatten()),
        })
        .collect();
    debug_assert!(GRAPH_FEATURES.len() == 2);
    // `[["name",value|null],...]` in bundle order.
    let pairs: Vec<(&str, Option<i64>)> = b
        .features
        .iter()
        .zip(&values)
        .map(|(f, v)| (f.name.as_str(), *v))
        .collect();
    let features = json(&pairs);
    let s = score(b, &cfg.df, &values, posture, tr.amount_minor);
    let id = decision_id(&tr.event_id, &cfg.bundle.digest, &cfg.policy_rev);
    let intents = action_intents(s.decision, &id);
    let detail = cfg.details.then(|| {
        // The graph features as DF uses them: masked under DEGRADED.
        let used = graph.as_ref().filter(|_| posture != Posture::Degraded);
        DecisionDetail {
            logical_time: tr.time,
            event_id: tr.event_id.clone(),
            decision_id: id.clone(),
            ts_ms: parse_rfc3339_millis(&tr.ts_utc).unwrap_or(tr.time),
            keys: tr.keys.clone(),
            features: fvals,
            cluster_size: used.map(|g| g.0),
            cluster_cards: used.map(|g| g.1),
            score: s.score,
            decision: s.decision,
            posture,
            degrade_mask: mask.clone(),
        }
    });
    let audit = AuditRecord {
        logical_time: tr.time,
        bucket: bucket_of(&tr.event_id, cfg.audit_buckets),
        feature_snapshot_hash: sha256_hex(features.as_bytes()),
        features,
        decision_id: id,
        trace_id: tr.trace_id,
        ts_utc: tr.ts_utc,
        decision: s.decision,
        score: s.score,
        reasons: json(&s.reasons),
        bundle_id: run.bundle_id.clone(),
        bundle_version: run.bundle_version.clone(),
        bundle_digest: run.bundle_digest.clone(),
        policy_rev: run.policy_rev.clone(),
        graph_version: graph.map(|g| g.2).unwrap_or_default(),
        posture,
        degrade_mask: json(&mask),
        source_partition: tr.coord.partition,
        source_offset: tr.coord.offset,
        source_record_ts: tr.record_ts,
        run_id: tr.run_id,
        scenario_id: tr.scenario_id,
        action_intents: json(
            &intents
                .iter()
                .map(|(action, idempotency_key)| Intent {
                    action,
                    idempotency_key,
                })
                .collect::<Vec<_>>(),
        ),
        event_id: tr.event_id,
    };
    (audit, detail)
}

fn combine_snapshots<'scope>(
    input: StreamVec<'scope, LogicalTime, SnapIn>,
    cfg: Arc<DecisionConfig>,
) -> StreamVec<'scope, LogicalTime, SnapshotRecord> {
    input.unary_frontier(
        Exchange::new(|_: &SnapIn| 0),
        "CombineSnapshots",
        move |_cap, _info| {
            let mut pending: Pending<SnapIn> = Pending::new();
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| {
                    let Some(cap) = cap.retain_least(output.output_index()) else {
                        return;
                    };
                    pending.stash_all(&cap, data, |s| match s {
                        SnapIn::Part { time, .. } | SnapIn::Graph { time, .. } => *time,
                    });
                });
                while let Some((t, items)) = pending.pop_if(|t| !frontier.less_equal(&t)) {
                    let Some(cap) = pending.capability().map(|c| c.delayed(&t)) else {
                        break;
                    };
                    // Workers report boundaries up to the global max logical time; a replay of a
                    // sub-range also stops at its declared end.
                    let in_bounds = cfg.emit_until.is_none_or(|u| t < u);
                    if !in_bounds || t < cfg.emit_from {
                        continue;
                    }
                    let (mut digest, mut keys) = (0u128, 0u64);
                    let (mut version, mut entities) = (format!("{t}:{:032x}", 0u128), 0u64);
                    for s in items {
                        match s {
                            SnapIn::Part {
                                digest: d, keys: k, ..
                            } => {
                                digest = digest.wrapping_add(d);
                                keys += k;
                            }
                            SnapIn::Graph {
                                version: v,
                                entities: e,
                                ..
                            } => {
                                version = v;
                                entities = e;
                            }
                        }
                    }
                    output.session(&cap).give(SnapshotRecord {
                        time: t,
                        feature_hash: format!("{digest:032x}"),
                        keys,
                        feature_rev: cfg.feature_rev.clone(),
                        graph_version: version,
                        graph_entities: entities,
                    });
                }
                pending.settle();
            }
        },
    )
}
