//! Slow operator activations: a diagnostic for latency tails. With `wiring.slow_activation`
//! set, each worker registers a timely event logger that times every operator activation and
//! logs (`warn`, target `tidemark::slow`) those that took longer, with the operator's name, so
//! a stall in decisions can be traced to the operator that held the worker thread.

use std::collections::HashMap;
use std::time::Duration;

use timely::logging::{StartStop, TimelyEvent, TimelyEventBuilder};
use timely::worker::Worker;

/// Registers the logger on `worker` when `threshold` is not zero.
pub fn log_slow_activations(worker: &mut Worker, threshold: Duration) {
    if threshold.is_zero() {
        return;
    }
    let index = worker.index();
    let mut names: HashMap<usize, String> = HashMap::new();
    let mut started: HashMap<usize, Duration> = HashMap::new();
    if let Some(mut registry) = worker.log_register() {
        registry.insert::<TimelyEventBuilder, _>("timely", move |_now, data| {
            let Some(data) = data else { return };
            for (at, event) in data.iter() {
                match event {
                    // A dataflow's own scope (address of length 1) spans all of its
                    // operators' activations: not an operator of its own.
                    TimelyEvent::Operates(o) if o.addr.len() > 1 => {
                        names.insert(o.id, o.name.clone());
                    }
                    TimelyEvent::Schedule(s) => match s.start_stop {
                        StartStop::Start => {
                            started.insert(s.id, *at);
                        }
                        StartStop::Stop => {
                            let (Some(t0), Some(name)) = (started.remove(&s.id), names.get(&s.id))
                            else {
                                continue;
                            };
                            let took = at.saturating_sub(t0);
                            if took >= threshold {
                                tracing::warn!(
                                    target: "tidemark::slow",
                                    worker = index,
                                    operator = name.as_str(),
                                    ms = took.as_secs_f64() * 1e3,
                                    "slow operator activation"
                                );
                            }
                        }
                    },
                    _ => {}
                }
            }
        });
    }
}
