//! The figures `unibeam top` shows and the monitor keeps: memory by type,
//! counts and their limits, run queues, reductions, I/O, CPU time, and
//! every process's size and activity. One evaluation on the node gathers
//! them; rates come from two samples.

use crate::json::to_json;
use crate::node::{DistError, Node};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Evaluated on the node (by `erl_eval`, so the guest needs no module of
/// ours). Processes that exit while it runs are left out.
const SAMPLE_EXPR: &str = r#"
Info = fun(P) -> erlang:process_info(P, [registered_name, memory, reductions,
                                          message_queue_len, current_function]) end,
Mfa = fun({M, F, A}) -> iolist_to_binary(io_lib:format("~ts:~ts/~b", [M, F, A]));
         (_) -> <<>> end,
Name = fun([]) -> <<>>; (N) -> atom_to_binary(N, utf8) end,
Procs = [[{pid, list_to_binary(pid_to_list(P))},
          {name, Name(proplists:get_value(registered_name, I))},
          {memory, proplists:get_value(memory, I)},
          {reductions, proplists:get_value(reductions, I)},
          {message_queue_len, proplists:get_value(message_queue_len, I)},
          {current_function, Mfa(proplists:get_value(current_function, I))}]
         || P <- erlang:processes(), I <- [Info(P)], I =/= undefined],
{{input, In}, {output, Out}} = erlang:statistics(io),
{Runtime, _} = erlang:statistics(runtime),
{Wall, _} = erlang:statistics(wall_clock),
[{node, atom_to_binary(node(), utf8)},
 {memory, erlang:memory()},
 {process_count, erlang:system_info(process_count)},
 {process_limit, erlang:system_info(process_limit)},
 {port_count, erlang:system_info(port_count)},
 {port_limit, erlang:system_info(port_limit)},
 {atom_count, erlang:system_info(atom_count)},
 {atom_limit, erlang:system_info(atom_limit)},
 {ets_count, erlang:system_info(ets_count)},
 {ets_limit, erlang:system_info(ets_limit)},
 {run_queue, erlang:statistics(run_queue)},
 {run_queue_lengths, erlang:statistics(run_queue_lengths)},
 {reductions, element(1, erlang:statistics(reductions))},
 {io_input, In},
 {io_output, Out},
 {runtime_ms, Runtime},
 {wall_ms, Wall},
 {schedulers, erlang:system_info(schedulers_online)},
 {processes, Procs}]
"#;

/// One process, as `top` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessSample {
    pub pid: String,
    /// Its registered name, or empty.
    pub name: String,
    pub memory: u64,
    pub reductions: u64,
    pub message_queue_len: u64,
    pub current_function: String,
}

/// A node's figures at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub node: String,
    /// `erlang:memory/0`: total, processes, atom, binary, code, ets, ...
    pub memory: BTreeMap<String, u64>,
    pub process_count: u64,
    pub process_limit: u64,
    pub port_count: u64,
    pub port_limit: u64,
    pub atom_count: u64,
    pub atom_limit: u64,
    pub ets_count: u64,
    pub ets_limit: u64,
    pub run_queue: u64,
    pub run_queue_lengths: Vec<u64>,
    /// Since the node started.
    pub reductions: u64,
    pub io_input: u64,
    pub io_output: u64,
    /// CPU time of all schedulers, and wall time, since the node started.
    pub runtime_ms: u64,
    pub wall_ms: u64,
    pub schedulers: u64,
    pub processes: Vec<ProcessSample>,
}

/// What changed per second between two samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    pub reductions_per_s: f64,
    pub io_input_bytes_per_s: f64,
    pub io_output_bytes_per_s: f64,
    /// Scheduler CPU time over wall time, per online scheduler: 0.0 to 1.0.
    pub scheduler_utilisation: f64,
}

/// Reads `node`'s figures.
pub fn sample(node: &Node) -> Result<Sample, DistError> {
    let term = node.eval_erlang(SAMPLE_EXPR)?;
    serde_json::from_value(to_json(&term)).map_err(|e| DistError::Unexpected {
        what: "the metrics expression",
        term: e.to_string(),
    })
}

/// The nodes `node` is connected to (`erlang:nodes()`): visible peers
/// only, so unibeam's own hidden connection is never among them.
pub fn peers(node: &Node) -> Result<Vec<String>, DistError> {
    let term = node.call("erlang", "nodes", Vec::new())?;
    serde_json::from_value(to_json(&term)).map_err(|e| DistError::Unexpected {
        what: "erlang:nodes()",
        term: e.to_string(),
    })
}

/// The rates between `earlier` and `later`; `None` when no time passed.
pub fn rates(earlier: &Sample, later: &Sample) -> Option<Rates> {
    let wall_ms = later.wall_ms.checked_sub(earlier.wall_ms).filter(|ms| *ms > 0)?;
    let per_s = |a: u64, b: u64| b.saturating_sub(a) as f64 * 1000.0 / wall_ms as f64;
    let busy_ms = later.runtime_ms.saturating_sub(earlier.runtime_ms) as f64;
    Some(Rates {
        reductions_per_s: per_s(earlier.reductions, later.reductions),
        io_input_bytes_per_s: per_s(earlier.io_input, later.io_input),
        io_output_bytes_per_s: per_s(earlier.io_output, later.io_output),
        scheduler_utilisation: (busy_ms / (wall_ms as f64 * later.schedulers.max(1) as f64)).min(1.0),
    })
}

/// How `top` orders processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Memory,
    Reductions,
    MessageQueue,
}

/// The `n` biggest processes by `key`.
pub fn top(sample: &Sample, key: SortKey, n: usize) -> Vec<&ProcessSample> {
    let mut procs: Vec<&ProcessSample> = sample.processes.iter().collect();
    procs.sort_by_key(|p| {
        std::cmp::Reverse(match key {
            SortKey::Memory => p.memory,
            SortKey::Reductions => p.reductions,
            SortKey::MessageQueue => p.message_queue_len,
        })
    });
    procs.truncate(n);
    procs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(wall_ms: u64, runtime_ms: u64, reductions: u64) -> Sample {
        Sample {
            node: "hello@hello".into(),
            memory: BTreeMap::from([("total".to_string(), 10)]),
            process_count: 2,
            process_limit: 1024,
            port_count: 1,
            port_limit: 1024,
            atom_count: 1,
            atom_limit: 1024,
            ets_count: 1,
            ets_limit: 1024,
            run_queue: 0,
            run_queue_lengths: vec![0],
            reductions,
            io_input: 0,
            io_output: 1000,
            runtime_ms,
            wall_ms,
            schedulers: 2,
            processes: vec![
                ProcessSample {
                    pid: "<0.1.0>".into(),
                    name: "small".into(),
                    memory: 10,
                    reductions: 500,
                    message_queue_len: 3,
                    current_function: "m:f/0".into(),
                },
                ProcessSample {
                    pid: "<0.2.0>".into(),
                    name: String::new(),
                    memory: 99,
                    reductions: 5,
                    message_queue_len: 0,
                    current_function: "m:g/1".into(),
                },
            ],
        }
    }

    #[test]
    fn rates_are_per_second_and_utilisation_per_scheduler() {
        let r = rates(&sample(1000, 100, 0), &sample(3000, 1100, 4000)).unwrap();
        assert_eq!(r.reductions_per_s, 2000.0);
        assert_eq!(r.scheduler_utilisation, 0.25);
        assert!(rates(&sample(1000, 0, 0), &sample(1000, 0, 0)).is_none());
    }

    #[test]
    fn top_sorts_by_the_chosen_key() {
        let s = sample(0, 0, 0);
        assert_eq!(top(&s, SortKey::Memory, 1)[0].pid, "<0.2.0>");
        assert_eq!(top(&s, SortKey::Reductions, 2)[0].name, "small");
        assert_eq!(top(&s, SortKey::MessageQueue, 5).len(), 2);
    }
}
