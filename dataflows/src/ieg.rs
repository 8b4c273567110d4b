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

use rustc_hash::FxHashMap as HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

use tidemark_operators::decision::DecisionTag;
use tidemark_operators::hashing::key_id;
use tidemark_operators::keyed::{fold_max, trail_boundaries};
use tidemark_operators::time::millis;
use tidemark_operators::LogicalTime;
use tidemark_operators::Pending;

use crate::event::{entity_key, entity_type, Event, EventSchema, FieldId, TypeId};

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

/// One end of a declared edge: the payload field and its entity type.
type EdgeEnd = (FieldId, String);

/// The graph policy resolved against an [`EventSchema`]: per event type, its edges as pairs
/// of (field, entity type).
#[derive(Clone, Debug)]
pub struct GraphPlan {
    edges: Vec<(TypeId, Vec<(EdgeEnd, EdgeEnd)>)>,
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

/// One entity of the live graph.
#[derive(Debug)]
struct Node {
    /// Its typed key (`card:…`): cluster ids and the version hash are defined on keys.
    name: Box<str>,
    is_card: bool,
    /// `key_id(name)`.
    id: u128,
    /// `(key_id of the cluster id, digest128(name 0x1F cluster id))` from the last version:
    /// the digest is recomputed only when the node's cluster id changes.
    cached: Option<(u128, u128)>,
    /// Neighbour → time of the latest event that created or refreshed the edge.
    adj: HashMap<u32, LogicalTime>,
}

/// The live graph over interned entities (public for the benchmark and tests of its
/// semantics).
///
/// Entities are interned to dense `u32` slots on first sight; the slots never reach an output
/// (cluster sizes are counts, the version hash is defined on keys), so their assignment order
/// does not matter. Edges expire through a time-ordered queue, so expiry costs O(expired
/// edges), and an entity with no edge left is freed.
#[derive(Default, Debug)]
pub struct LiveGraph {
    nodes: Vec<Option<Node>>,
    free: Vec<u32>,
    index: HashMap<u128, u32>,
    /// (edge time, a, b) in time order.
    expiry: VecDeque<(LogicalTime, u32, u32)>,
    /// BFS marks: `mark[n] == epoch` when seen in the current search.
    mark: Vec<u32>,
    epoch: u32,
    ttl: u64,
    cap: usize,
}

impl LiveGraph {
    /// An empty graph.
    pub fn new(ttl_ms: u64, degree_cap: usize) -> Self {
        LiveGraph {
            ttl: ttl_ms,
            cap: degree_cap,
            ..Default::default()
        }
    }

    fn live(&self, s: LogicalTime, t: LogicalTime) -> bool {
        s < t && t.saturating_sub(self.ttl) <= s
    }

    fn node(&self, n: u32) -> Option<&Node> {
        self.nodes.get(n as usize).and_then(Option::as_ref)
    }

    fn intern(&mut self, name: &str) -> u32 {
        let id = key_id(name.as_bytes());
        if let Some(&n) = self.index.get(&id) {
            return n;
        }
        let node = Node {
            name: name.into(),
            is_card: name.starts_with("card:"),
            id,
            cached: None,
            adj: HashMap::default(),
        };
        let n = match self.free.pop() {
            Some(n) => {
                self.nodes[n as usize] = Some(node);
                n
            }
            None => {
                self.nodes.push(Some(node));
                self.mark.push(0);
                (self.nodes.len() - 1) as u32
            }
        };
        self.index.insert(id, n);
        n
    }

    /// True when no entity has an edge.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Adds or refreshes an undirected edge at `s` (times arrive in order).
    pub fn add(&mut self, a: &str, b: &str, s: LogicalTime) {
        let (x, y) = (self.intern(a), self.intern(b));
        for (u, v) in [(x, y), (y, x)] {
            if let Some(Some(n)) = self.nodes.get_mut(u as usize) {
                n.adj.insert(v, s);
            }
        }
        self.expiry.push_back((s, x, y));
    }

    fn is_hub(&self, n: u32, t: LogicalTime) -> bool {
        self.node(n).is_some_and(|m| {
            m.adj.len() > self.cap
                && m.adj
                    .values()
                    .filter(|s| self.live(**s, t))
                    .take(self.cap + 1)
                    .count()
                    > self.cap
        })
    }

    /// (size, cards) of the cluster of `start` as of `t`.
    pub fn cluster(&mut self, start: &str, t: LogicalTime) -> (i64, i64) {
        let is_card = start.starts_with("card:");
        let Some(&s) = self.index.get(&key_id(start.as_bytes())) else {
            return (1, i64::from(is_card));
        };
        if self.is_hub(s, t) {
            return (1, i64::from(is_card));
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.mark.iter_mut().for_each(|m| *m = 0);
            self.epoch = 1;
        }
        let epoch = self.epoch;
        let mut mark = std::mem::take(&mut self.mark);
        let mut stack = vec![s];
        mark[s as usize] = epoch;
        let (mut size, mut cards) = (0i64, 0i64);
        while let Some(u) = stack.pop() {
            let Some(node) = self.node(u) else { continue };
            size += 1;
            cards += i64::from(node.is_card);
            for (&v, &sv) in &node.adj {
                if self.live(sv, t) && mark[v as usize] != epoch && !self.is_hub(v, t) {
                    mark[v as usize] = epoch;
                    stack.push(v);
                }
            }
        }
        self.mark = mark;
        (size, cards)
    }

    /// Drops edges that can no longer be live at `t` or later, and entities left without one.
    pub fn expire(&mut self, t: LogicalTime) {
        let bound = t.saturating_sub(self.ttl);
        while let Some(&(s, x, y)) = self.expiry.front() {
            if s >= bound {
                break;
            }
            self.expiry.pop_front();
            for (u, v) in [(x, y), (y, x)] {
                let Some(Some(n)) = self.nodes.get_mut(u as usize) else {
                    continue;
                };
                // A refreshed edge carries a later time: only its latest event expires it.
                if n.adj.get(&v) == Some(&s) {
                    n.adj.remove(&v);
                }
                if n.adj.is_empty() {
                    let id = n.id;
                    self.nodes[u as usize] = None;
                    self.index.remove(&id);
                    self.free.push(u);
                }
            }
        }
    }

    /// `(hash, entities)` of the (entity, cluster id) set as of `t`: union-find over live
    /// edges between non-hubs; a cluster's id is its smallest entity key.
    pub fn version(&mut self, t: LogicalTime) -> (u128, u64) {
        let n = self.nodes.len();
        let hub: Vec<bool> = (0..n as u32).map(|u| self.is_hub(u, t)).collect();
        let mut parent: Vec<u32> = (0..n as u32).collect();
        let mut linked = vec![false; n];
        fn find(p: &mut [u32], mut x: u32) -> u32 {
            while p[x as usize] != x {
                let up = p[p[x as usize] as usize];
                p[x as usize] = up;
                x = up;
            }
            x
        }
        for (u, node) in self.nodes.iter().enumerate() {
            let Some(node) = node else { continue };
            if hub[u] {
                continue;
            }
            for (&v, &s) in &node.adj {
                if !self.live(s, t) || hub[v as usize] {
                    continue;
                }
                linked[u] = true;
                linked[v as usize] = true;
                let (ru, rv) = (find(&mut parent, u as u32), find(&mut parent, v));
                if ru != rv {
                    parent[ru.max(rv) as usize] = ru.min(rv);
                }
            }
        }
        // The smallest key of each set, then one digest per entity.
        let name = |u: usize| self.nodes[u].as_ref().map_or("", |n| &n.name);
        let mut smallest: Vec<Option<u32>> = vec![None; n];
        for u in (0..n).filter(|u| linked[*u]) {
            let r = find(&mut parent, u as u32) as usize;
            if smallest[r].is_none_or(|m| name(u) < name(m as usize)) {
                smallest[r] = Some(u as u32);
            }
        }
        let roots: Vec<(usize, u32)> = (0..n)
            .filter(|u| linked[*u])
            .filter_map(|u| Some((u, smallest[find(&mut parent, u as u32) as usize]?)))
            .collect();
        let (mut hash, mut entities) = (0u128, 0u64);
        for (u, m) in roots {
            let (Some(node), Some(root)) = (self.node(u as u32), self.node(m)) else {
                continue;
            };
            let d = match node.cached {
                Some((rid, d)) if rid == root.id => d,
                _ => {
                    let mut h = blake3::Hasher::new();
                    h.update(node.name.as_bytes());
                    h.update(b"\x1f");
                    h.update(root.name.as_bytes());
                    let mut b = [0u8; 16];
                    b.copy_from_slice(&h.finalize().as_bytes()[..16]);
                    let d = u128::from_le_bytes(b);
                    let rid = root.id;
                    if let Some(Some(node)) = self.nodes.get_mut(u) {
                        node.cached = Some((rid, d));
                    }
                    d
                }
            };
            hash = hash.wrapping_add(d);
            entities += 1;
        }
        (hash, entities)
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
            let mut pending: Pending<GraphInput> = Pending::new();
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
                            pending.stash(&cap, item.time(), item);
                        }
                    }
                });
                let mut out_cap: Option<Capability<LogicalTime>> = None;
                let mut out: Vec<GraphOutput> = Vec::new();
                loop {
                    let next_input = pending.first_time().filter(|t| !frontier.less_equal(t));
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
                            next_snapshot = if graph.is_empty() {
                                None
                            } else {
                                Some(ts + snapshot_ms)
                            };
                        }
                        (_, Some(t)) if next_snapshot.is_none_or(|ts| t < ts) => {
                            if out_cap.is_none() {
                                out_cap = pending.capability().cloned();
                            }
                            let Some((_, items)) = pending.pop_if(|_| true) else {
                                break;
                            };
                            if snapshot_ms > 0 && next_snapshot.is_none() {
                                next_snapshot = Some((t / snapshot_ms + 1) * snapshot_ms);
                            }
                            graph.expire(t);
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
                pending.settle();
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
