//! IEG — the Identity & Entity Graph (SPEC §6).
//!
//! Each admitted event adds the edges its type declares (`[graph.edges]`). An edge created (or
//! refreshed) by an event at `s` is live at `t` when `t - edge_ttl <= s < t`. An entity whose
//! live degree (distinct live neighbours) exceeds `degree_cap` is a hub and is ignored with all
//! its edges. Identity clusters are the connected components of live edges between non-hubs;
//! a cluster's id is its smallest entity key.
//!
//! The graph lives on one worker (all graph inputs are exchanged to worker 0), which processes
//! logical times in order once the frontier has passed them: at time `t` it first answers the
//! decision queries at `t` (cluster of the transaction's card, by a search over live non-hub
//! edges, i.e. strictly before `t`), then adds the edges of events at `t`. At each snapshot
//! boundary `T` it computes the full component labelling (union-find over live non-hub edges)
//! and publishes `graph_version = "<T>:<hash>"`, where hash is the wrapping sum of the 128-bit
//! digests of `entity 0x1F cluster_id` over every entity with a live non-hub edge.

use std::collections::{BTreeMap, VecDeque};

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

use tidemark_operators::decision::DecisionTag;
use tidemark_operators::keyed::{fold_max, stash, trail_boundaries};
use tidemark_operators::time::millis;
use tidemark_operators::LogicalTime;

use crate::event::{entity_key, entity_type, Event, EventSchema, FieldId, TypeId};
use crate::ofp::digest128;

/// Graph policy section (`[graph]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GraphPolicy {
    /// Revision. Default 1.
    pub revision: u32,
    /// Whether IEG runs (graph features are null when disabled). Default true.
    pub enabled: bool,
    /// Edge lifetime after the event that created it. Default `24h`.
    #[serde(with = "humantime_serde")]
    pub edge_ttl: Duration,
    /// Entities with more live neighbours are hubs. Default 25.
    pub degree_cap: usize,
    /// Edges per event type, as pairs of payload fields.
    pub edges: BTreeMap<String, Vec<(String, String)>>,
}

impl Default for GraphPolicy {
    fn default() -> Self {
        let p = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        let mut edges = BTreeMap::new();
        edges.insert(
            "txn.authorization.v1".to_owned(),
            vec![
                p("card_id", "account_id"),
                p("card_id", "device_id"),
                p("card_id", "email"),
                p("account_id", "device_id"),
            ],
        );
        edges.insert(
            "account.login.v1".to_owned(),
            vec![p("account_id", "device_id"), p("account_id", "ip")],
        );
        GraphPolicy {
            revision: 1,
            enabled: true,
            edge_ttl: Duration::from_secs(86_400),
            degree_cap: 25,
            edges,
        }
    }
}

/// Input to the graph operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GraphInput {
    /// Edges (entity key pairs) added by an event at `time`.
    Edges {
        /// Logical time.
        time: LogicalTime,
        /// Entity pairs.
        pairs: Vec<(String, String)>,
    },
    /// Cluster of `card` as of `time` for a decision.
    Query {
        /// Logical time.
        time: LogicalTime,
        /// The decision.
        tag: DecisionTag,
        /// The card entity key.
        card: String,
    },
}

impl GraphInput {
    fn time(&self) -> LogicalTime {
        match self {
            GraphInput::Edges { time, .. } | GraphInput::Query { time, .. } => *time,
        }
    }
}

/// Output of the graph operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GraphOutput {
    /// Cluster features for a decision.
    Answer {
        /// The decision.
        tag: DecisionTag,
        /// Logical time.
        time: LogicalTime,
        /// Entities in the card's cluster (1 when isolated or a hub).
        size: i64,
        /// Card entities in the cluster.
        cards: i64,
        /// Graph version in force (latest boundary at or before `time`), or empty.
        version: String,
    },
    /// A graph version at a snapshot boundary.
    Version {
        /// The boundary.
        time: LogicalTime,
        /// `<time>:<32 hex>`.
        version: String,
        /// Entities with a live non-hub edge.
        entities: u64,
    },
}

/// The graph policy resolved against an [`EventSchema`]: per event type, its edges as pairs
/// of (field, entity type).
#[derive(Clone, Debug)]
pub struct GraphPlan {
    edges: Vec<(TypeId, Vec<((FieldId, String), (FieldId, String))>)>,
    card: FieldId,
}

impl GraphPlan {
    /// Resolves `policy`'s edge declarations, registering their fields and types in `schema`.
    pub fn new(policy: &GraphPolicy, schema: &mut EventSchema) -> Self {
        let mut edges = Vec::new();
        for (ty, decls) in &policy.edges {
            let mut pairs = Vec::new();
            for (a, b) in decls {
                let a = (schema.field(a), entity_type(a).to_owned());
                let b = (schema.field(b), entity_type(b).to_owned());
                pairs.push((a, b));
            }
            edges.push((schema.ty(ty), pairs));
        }
        GraphPlan {
            edges,
            card: schema.field("card_id"),
        }
    }
}

/// Graph inputs for an event: its edges, and a query when it is a decision trigger.
pub fn graph_inputs(
    plan: &GraphPlan,
    e: &Event,
    decide: Option<DecisionTag>,
    out: &mut Vec<GraphInput>,
) {
    let key = |(f, ty): &(FieldId, String)| e.field(*f).map(|v| format!("{ty}:{v}"));
    if let Some((_, decls)) = plan.edges.iter().find(|(t, _)| e.is(*t)) {
        let pairs: Vec<(String, String)> = decls
            .iter()
            .filter_map(|(a, b)| Some((key(a)?, key(b)?)))
            .filter(|(a, b)| a != b)
            .collect();
        if !pairs.is_empty() {
            out.push(GraphInput::Edges {
                time: e.time,
                pairs,
            });
        }
    }
    if let Some(tag) = decide {
        if let Some(card) = e.field(plan.card) {
            out.push(GraphInput::Query {
                time: e.time,
                tag,
                card: entity_key("card_id", card),
            });
        }
    }
}

/// The live graph (public for the benchmark and tests of its semantics).
#[derive(Default, Debug)]
pub struct LiveGraph {
    adj: HashMap<String, HashMap<String, LogicalTime>>,
    ttl: u64,
    cap: usize,
}

impl LiveGraph {
    /// An empty graph.
    pub fn new(ttl_ms: u64, degree_cap: usize) -> Self {
        LiveGraph {
            adj: HashMap::default(),
            ttl: ttl_ms,
            cap: degree_cap,
        }
    }

    fn live(&self, s: LogicalTime, t: LogicalTime) -> bool {
        s < t && t.saturating_sub(self.ttl) <= s
    }

    /// Adds or refreshes an undirected edge at `s`.
    pub fn add(&mut self, a: &str, b: &str, s: LogicalTime) {
        self.adj
            .entry(a.to_owned())
            .or_default()
            .insert(b.to_owned(), s);
        self.adj
            .entry(b.to_owned())
            .or_default()
            .insert(a.to_owned(), s);
    }

    fn is_hub(&self, n: &str, t: LogicalTime) -> bool {
        self.adj.get(n).is_some_and(|m| {
            m.values()
                .filter(|s| self.live(**s, t))
                .take(self.cap + 1)
                .count()
                > self.cap
        })
    }

    /// (size, cards) of the cluster of `start` as of `t`.
    pub fn cluster(&self, start: &str, t: LogicalTime) -> (i64, i64) {
        let is_card = |n: &str| n.starts_with("card:");
        if self.is_hub(start, t) {
            return (1, i64::from(is_card(start)));
        }
        let mut seen: HashSet<&str> = HashSet::default();
        let mut queue: VecDeque<&str> = VecDeque::new();
        seen.insert(start);
        queue.push_back(start);
        while let Some(u) = queue.pop_front() {
            let Some(nbrs) = self.adj.get(u) else {
                continue;
            };
            for (v, s) in nbrs {
                if self.live(*s, t) && !seen.contains(v.as_str()) && !self.is_hub(v, t) {
                    seen.insert(v.as_str());
                    queue.push_back(v.as_str());
                }
            }
        }
        (
            seen.len() as i64,
            seen.iter().filter(|n| is_card(n)).count() as i64,
        )
    }

    /// Drops edges that can no longer be live at `t` or later.
    pub fn expire(&mut self, t: LogicalTime) {
        let bound = t.saturating_sub(self.ttl);
        self.adj.retain(|_, m| {
            m.retain(|_, s| *s >= bound);
            !m.is_empty()
        });
    }

    /// `(hash, entities)` of the (entity, cluster id) set as of `t`.
    pub fn version(&self, t: LogicalTime) -> (u128, u64) {
        let hubs: HashSet<&str> = self
            .adj
            .keys()
            .filter(|n| self.is_hub(n, t))
            .map(String::as_str)
            .collect();
        let mut parent: HashMap<&str, &str> = HashMap::default();
        fn find<'a>(p: &mut HashMap<&'a str, &'a str>, x: &'a str) -> &'a str {
            let mut r = x;
            while let Some(&q) = p.get(r) {
                if q == r {
                    break;
                }
                r = q;
            }
            let mut c = x;
            while let Some(&q) = p.get(c) {
                if q == r {
                    break;
                }
                p.insert(c, r);
                c = q;
            }
            r
        }
        for (u, nbrs) in &self.adj {
            if hubs.contains(u.as_str()) {
                continue;
            }
            for (v, s) in nbrs {
                if !self.live(*s, t) || hubs.contains(v.as_str()) {
                    continue;
                }
                parent.entry(u.as_str()).or_insert(u.as_str());
                parent.entry(v.as_str()).or_insert(v.as_str());
                let (ru, rv) = (find(&mut parent, u.as_str()), find(&mut parent, v.as_str()));
                if ru != rv {
                    // Union by smaller key: roots are always the smallest key of their set.
                    if ru < rv {
                        parent.insert(rv, ru);
                    } else {
                        parent.insert(ru, rv);
                    }
                }
            }
        }
        let nodes: Vec<&str> = parent.keys().copied().collect();
        let mut hash = 0u128;
        for n in &nodes {
            let root = find(&mut parent, n);
            hash = hash.wrapping_add(digest128(format!("{n}\u{1f}{root}").as_bytes()));
        }
        (hash, nodes.len() as u64)
    }
}

/// Extension trait: the IEG operator.
pub trait IdentityGraph<'scope> {
    /// Runs the graph over inputs (see module docs). `snapshot_ms == 0` disables versions.
    /// `bound` is the global max logical time ([`tidemark_operators::keyed::global_max`]).
    fn identity_graph(
        self,
        policy: &GraphPolicy,
        snapshot_ms: u64,
        bound: StreamVec<'scope, LogicalTime, LogicalTime>,
    ) -> StreamVec<'scope, LogicalTime, GraphOutput>;
}

impl<'scope> IdentityGraph<'scope> for StreamVec<'scope, LogicalTime, GraphInput> {
    fn identity_graph(
        self,
        policy: &GraphPolicy,
        snapshot_ms: u64,
        bound: StreamVec<'scope, LogicalTime, LogicalTime>,
    ) -> StreamVec<'scope, LogicalTime, GraphOutput> {
        let ttl = millis(policy.edge_ttl);
        let cap = policy.degree_cap;
        let pact = Exchange::new(|_: &GraphInput| 0);
        self.binary_frontier(bound, pact, Pipeline, "IdentityGraph", move |cap0, _| {
            let mut global_max: Option<LogicalTime> = None;
            let mut trailing: Option<Capability<LogicalTime>> = Some(cap0);
            let mut pending: tidemark_operators::keyed::Pending<GraphInput> = BTreeMap::new();
            let mut graph = LiveGraph::new(ttl, cap);
            let mut next_snapshot: Option<LogicalTime> = None;
            let mut version = String::new();
            move |(input, frontier), (bound_in, bound_frontier), output| {
                bound_in.for_each_stamp(|_c, data| fold_max(&mut global_max, data));
                let complete =
                    frontier.frontier().is_empty() && bound_frontier.frontier().is_empty();
                input.for_each_stamp(|cap, data| {
                    let Some(cap) = cap.retain_least(output.output_index()) else {
                        return;
                    };
                    for batch in data {
                        for item in batch.drain(..) {
                            stash(&mut pending, &cap, item.time(), item);
                        }
                    }
                });
                let mut out_cap: Option<Capability<LogicalTime>> = None;
                let mut out: Vec<GraphOutput> = Vec::new();
                loop {
                    let next_input = pending
                        .first_key_value()
                        .map(|(t, _)| *t)
                        .filter(|t| !frontier.less_equal(t));
                    let snap = next_snapshot.filter(|t| {
                        !frontier.less_than(t)
                            && !bound_frontier.less_than(t)
                            && (!complete || global_max.is_some_and(|m| *t <= m))
                    });
                    match (snap, next_input) {
                        (Some(ts), ni) if ni.is_none_or(|ti| ts <= ti) => {
                            graph.expire(ts);
                            let (hash, entities) = graph.version(ts);
                            version = format!("{ts}:{hash:032x}");
                            if let Some(c) = trailing.as_ref() {
                                let at = if *c.time() <= ts {
                                    c.delayed(&ts)
                                } else {
                                    c.clone()
                                };
                                output.session(&at).give(GraphOutput::Version {
                                    time: ts,
                                    version: version.clone(),
                                    entities,
                                });
                            }
                            next_snapshot = if graph.adj.is_empty() {
                                None
                            } else {
                                Some(ts + snapshot_ms)
                            };
                        }
                        (_, Some(t)) if next_snapshot.is_none_or(|ts| t < ts) => {
                            let Some((cap, items)) = pending.remove(&t) else {
                                break;
                            };
                            if snapshot_ms > 0 && next_snapshot.is_none() {
                                next_snapshot = Some((t / snapshot_ms + 1) * snapshot_ms);
                            }
                            if out_cap.is_none() {
                                out_cap = Some(cap.clone());
                            }
                            for item in &items {
                                if let GraphInput::Query { time, tag, card } = item {
                                    let (size, cards) = graph.cluster(card, *time);
                                    out.push(GraphOutput::Answer {
                                        tag: *tag,
                                        time: *time,
                                        size,
                                        cards,
                                        version: version.clone(),
                                    });
                                }
                            }
                            for item in items {
                                if let GraphInput::Edges { time, pairs } = item {
                                    for (a, b) in &pairs {
                                        graph.add(a, b, time);
                                    }
                                }
                            }
                        }
                        _ => break,
                    }
                }
                // One message per activation, not one per logical time: the capability of the
                // earliest time processed is valid for every later one.
                if let Some(c) = out_cap {
                    output.session(&c).give_iterator(out.drain(..));
                }
                trail_boundaries(
                    &mut trailing,
                    frontier.frontier().iter().min().copied(),
                    next_snapshot,
                    complete,
                    global_max,
                );
            }
        })
    }
}
