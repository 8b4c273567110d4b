//! [`KeyedWindows`]: point-in-time sliding-window lookups with periodic state digests.
//!
//! The input carries, per key, contributions ([`WindowInput::Add`]) and point-in-time queries
//! ([`WindowInput::Query`]), each with its logical time in the data. Inputs are routed to the
//! worker owning the key, buffered, and processed in logical-time order once the frontier has
//! passed their time. At time `t`, per key: evict contributions older than `t - window`, answer
//! every query at `t` (so a query sees exactly the contributions with `t - window <= s < t`),
//! then add the contributions at `t`. Each query is answered once, at its own time: this is a
//! half-join against the window state, never re-emitted when the state changes later.
//!
//! Every `snapshot_ms` of logical time, once the frontier reaches a multiple `T`, each worker
//! digests the state as of `T` (every key with a non-empty window) into a [`SnapshotPart`]: the
//! wrapping sum of a 128-bit digest per `(key, value)` and the key count, emitted at timely time
//! `T`. Sums combine across workers in any order, so the combined digest does not depend on the
//! worker count.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap as HashMap;
use std::hash::Hash;

use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

use crate::time::LogicalTime;
use crate::window::{Agg, Value, WindowState};

/// Folds broadcast maxima (from [`global_max`]) into `acc`.
pub fn fold_max<'a>(
    acc: &mut Option<LogicalTime>,
    data: impl Iterator<Item = &'a mut Vec<LogicalTime>>,
) {
    for m in data.flat_map(|batch| batch.drain(..)) {
        *acc = Some(acc.map_or(m, |g| g.max(m)));
    }
}

/// Buffers `item` at logical `time` under a capability for `time` (or for the message's time
/// when that is later, which a well-formed input never has).
pub fn stash<D>(
    pending: &mut Pending<D>,
    cap: &Capability<LogicalTime>,
    time: LogicalTime,
    item: D,
) {
    // Hold the capability at the item's own logical time (never below the message's): a
    // message's time can trail the logical times it carries by a whole activation, and a
    // buffered item must not hold the output frontier further back than its own time.
    let e = pending
        .entry(time)
        .or_insert_with(|| (cap.delayed(&time.max(*cap.time())), Vec::new()));
    if cap.time() > &time && cap.time() < e.0.time() {
        e.0 = cap.clone();
    }
    e.1.push(item);
}

/// Trails a capability behind the input frontier `frontier_min`, but never past a snapshot
/// boundary still to be reported (`next_boundary`), so boundary outputs can carry exactly
/// their boundary's time. Once the input is `complete`, boundaries above `global_max` are
/// never reported and the capability is released.
pub fn trail_boundaries(
    trailing: &mut Option<Capability<LogicalTime>>,
    frontier_min: Option<LogicalTime>,
    next_boundary: Option<LogicalTime>,
    complete: bool,
    global_max: Option<LogicalTime>,
) {
    let Some(c) = trailing.as_mut() else { return };
    let hold = match (frontier_min, next_boundary) {
        (Some(f), Some(s)) => Some(f.min(s)),
        (Some(f), None) => Some(f),
        (None, Some(s)) if !complete || global_max.is_some_and(|m| s <= m) => Some(s),
        (None, _) => None,
    };
    match hold {
        Some(h) if h > *c.time() => c.downgrade(&h),
        Some(_) => {}
        None => *trailing = None,
    }
}

/// Inputs buffered by logical time, each time with the least capability that delivered it.
pub type Pending<D> = BTreeMap<LogicalTime, (Capability<LogicalTime>, Vec<D>)>;

/// One input to [`KeyedWindows`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WindowInput<K, Q> {
    /// A contribution to `key` at `time`.
    Add {
        /// The key.
        key: K,
        /// Logical time.
        time: LogicalTime,
        /// The value.
        value: Value,
    },
    /// A query of `key` as of `time` (strictly before).
    Query {
        /// The key.
        key: K,
        /// Logical time.
        time: LogicalTime,
        /// Returned with the answer.
        tag: Q,
    },
}

impl<K, Q> WindowInput<K, Q> {
    fn key(&self) -> &K {
        match self {
            WindowInput::Add { key, .. } | WindowInput::Query { key, .. } => key,
        }
    }
    fn time(&self) -> LogicalTime {
        match self {
            WindowInput::Add { time, .. } | WindowInput::Query { time, .. } => *time,
        }
    }
}

/// An answered query.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowAnswer<Q> {
    /// The query's tag.
    pub tag: Q,
    /// The query's time.
    pub time: LogicalTime,
    /// The aggregate (`None` for min/max/last_gap of nothing).
    pub value: Option<i64>,
}

/// One worker's digest of the window state as of `time`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPart {
    /// The snapshot boundary.
    pub time: LogicalTime,
    /// Wrapping sum of per-(key, value) digests.
    pub digest: u128,
    /// Keys with a non-empty window.
    pub keys: u64,
    /// Largest contribution time this worker has seen (bounds which boundaries are reported).
    pub max_seen: LogicalTime,
}

/// Output of [`KeyedWindows::keyed_windows`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WindowOutput<Q> {
    /// An answered query.
    Answer(WindowAnswer<Q>),
    /// A state digest part.
    Snapshot(SnapshotPart),
}

/// Per-key configuration: the aggregation and window (ms) of a key.
pub trait WindowSpec<K>: Clone + 'static {
    /// Aggregation and window of `key`.
    fn spec(&self, key: &K) -> (Agg, u64);
    /// 128-bit digest of `(key, value)` for state snapshots.
    fn digest(&self, key: &K, value: i64) -> u128;
    /// Stable routing hash of a key.
    fn route(&self, key: &K) -> u64;
}

/// Extension trait for keyed sliding-window lookups.
pub trait KeyedWindows<'scope, K, Q> {
    /// See the module docs. `snapshot_ms == 0` disables snapshots. `bound` carries the
    /// largest logical time of the whole input (see [`global_max`]): once every input is
    /// complete, only boundaries up to it are reported.
    fn keyed_windows<S: WindowSpec<K>>(
        self,
        spec: S,
        snapshot_ms: u64,
        bound: StreamVec<'scope, LogicalTime, LogicalTime>,
    ) -> StreamVec<'scope, LogicalTime, WindowOutput<Q>>;
}

/// The largest logical time of a stream, broadcast to every worker when the stream
/// completes. Its capability trails the input frontier, so it never holds anything back.
pub fn global_max<'scope>(
    times: StreamVec<'scope, LogicalTime, LogicalTime>,
) -> StreamVec<'scope, LogicalTime, LogicalTime> {
    use timely::dataflow::operators::vec::Broadcast;
    times
        .unary_frontier(
            timely::dataflow::channels::pact::Pipeline,
            "GlobalMax",
            |cap, _| {
                let mut cap = Some(cap);
                let mut max: Option<LogicalTime> = None;
                move |(input, frontier), output| {
                    input.for_each_stamp(|_c, data| {
                        for batch in data {
                            for t in batch.drain(..) {
                                max = Some(max.map_or(t, |m: LogicalTime| m.max(t)));
                            }
                        }
                    });
                    if let Some(c) = cap.as_mut() {
                        match frontier.frontier().iter().min() {
                            Some(f) if f > c.time() => c.downgrade(f),
                            Some(_) => {}
                            None => {
                                if let Some(m) = max {
                                    output.session(&*c).give(m);
                                }
                                cap = None;
                            }
                        }
                    }
                }
            },
        )
        .broadcast()
}

struct KeyState {
    window: u64,
    state: WindowState,
}

impl<'scope, K, Q> KeyedWindows<'scope, K, Q> for StreamVec<'scope, LogicalTime, WindowInput<K, Q>>
where
    K: timely::ExchangeData + Eq + Hash + Clone,
    Q: timely::ExchangeData,
{
    fn keyed_windows<S: WindowSpec<K>>(
        self,
        spec: S,
        snapshot_ms: u64,
        bound: StreamVec<'scope, LogicalTime, LogicalTime>,
    ) -> StreamVec<'scope, LogicalTime, WindowOutput<Q>> {
        let router = spec.clone();
        let pact = Exchange::new(move |i: &WindowInput<K, Q>| router.route(i.key()));
        self.binary_frontier(bound, pact, Pipeline, "KeyedWindows", move |cap, _info| {
            let mut global_max: Option<LogicalTime> = None;
            let mut trailing: Option<Capability<LogicalTime>> = Some(cap);
            let mut pending: Pending<WindowInput<K, Q>> = BTreeMap::new();
            let mut keys: HashMap<K, KeyState> = HashMap::default();
            let mut next_snapshot: Option<LogicalTime> = None;
            let mut max_seen: LogicalTime = 0;
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
                            let t = item.time();
                            stash(&mut pending, &cap, t, item);
                        }
                    }
                });
                let mut out_cap: Option<Capability<LogicalTime>> = None;
                let mut out: Vec<WindowOutput<Q>> = Vec::new();
                loop {
                    let next_input = pending
                        .first_key_value()
                        .map(|(t, _)| *t)
                        .filter(|t| !frontier.less_equal(t));
                    // Boundaries are due once the frontier reaches them (state as of T needs
                    // only contributions before T).
                    let snap = next_snapshot.filter(|t| {
                        !frontier.less_than(t)
                            && !bound_frontier.less_than(t)
                            && (!complete || global_max.is_some_and(|m| *t <= m))
                    });
                    match (snap, next_input) {
                        (Some(ts), ni) if ni.is_none_or(|ti| ts <= ti) => {
                            let mut digest = 0u128;
                            let mut count = 0u64;
                            keys.retain(|k, ks| {
                                ks.state.evict_before(ts.saturating_sub(ks.window));
                                if ks.state.is_empty() {
                                    return false;
                                }
                                if let Some(v) = ks.state.value(ts) {
                                    digest = digest.wrapping_add(spec.digest(k, v));
                                }
                                count += 1;
                                true
                            });
                            if count > 0 {
                                if let Some(c) = trailing.as_ref() {
                                    let at = if *c.time() <= ts {
                                        c.delayed(&ts)
                                    } else {
                                        c.clone()
                                    };
                                    output.session(&at).give(WindowOutput::Snapshot(
                                        SnapshotPart {
                                            time: ts,
                                            digest,
                                            keys: count,
                                            max_seen,
                                        },
                                    ));
                                }
                            }
                            next_snapshot = if keys.is_empty() {
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
                            // Queries first (strictly before t), then contributions at t.
                            let (queries, adds): (Vec<_>, Vec<_>) = items
                                .into_iter()
                                .partition(|i| matches!(i, WindowInput::Query { .. }));
                            for item in queries {
                                if let WindowInput::Query { key, time, tag } = item {
                                    let value = match keys.get_mut(&key) {
                                        Some(ks) => {
                                            ks.state.evict_before(time.saturating_sub(ks.window));
                                            ks.state.value(time)
                                        }
                                        None => WindowState::new(spec.spec(&key).0).value(time),
                                    };
                                    out.push(WindowOutput::Answer(WindowAnswer {
                                        tag,
                                        time,
                                        value,
                                    }));
                                }
                            }
                            for item in adds {
                                if let WindowInput::Add { key, time, value } = item {
                                    max_seen = max_seen.max(time);
                                    let ks = keys.entry(key).or_insert_with_key(|k| {
                                        let (agg, window) = spec.spec(k);
                                        KeyState {
                                            window,
                                            state: WindowState::new(agg),
                                        }
                                    });
                                    ks.state.evict_before(time.saturating_sub(ks.window));
                                    ks.state.push(time, value);
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
