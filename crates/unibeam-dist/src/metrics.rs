//! The figures `unibeam top` shows and the monitor keeps: memory by type,
//! counts and their limits, run queues, reductions, I/O, CPU time, and
//! every process's size and activity. One evaluation on the node gathers
//! them; rates come from two samples.

use crate::json::to_json;
use crate::node::{DistError, Node};
use erl_dist::term::Term;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Evaluated on the node (by `erl_eval`, so the guest needs no module of
/// ours). Processes that exit while it runs are left out. Only BIFs, and
/// the processes' figures come back raw, to be read on the host: under
/// TCG, formatting them in the guest's interpreter made a sample cost 39 ms
/// of guest CPU against 4 ms raw, and the monitor samples every instance
/// every few seconds.
const SAMPLE_EXPR: &str = r#"
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
 {processes, [{P, erlang:process_info(P, [registered_name, memory, reductions,
                                          message_queue_len, current_function])}
              || P <- erlang:processes()]}]
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
    /// Read apart from the rest (`take_processes`).
    #[serde(default)]
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
    let mut term = node.eval_erlang(SAMPLE_EXPR)?;
    let processes = take_processes(&mut term);
    let mut sample: Sample = serde_json::from_value(to_json(&term)).map_err(|e| DistError::Unexpected {
        what: "the metrics expression",
        term: e.to_string(),
    })?;
    sample.processes = processes;
    Ok(sample)
}

/// Removes the `{processes, [{Pid, Info}]}` pair from the sample's property
/// list and reads it.
fn take_processes(term: &mut Term) -> Vec<ProcessSample> {
    let Term::List(list) = term else {
        return Vec::new();
    };
    let Some(at) = list.elements.iter().position(|e| is_pair(e, "processes")) else {
        return Vec::new();
    };
    let Term::Tuple(pair) = list.elements.remove(at) else {
        return Vec::new();
    };
    match &pair.elements[1] {
        Term::List(procs) => procs.elements.iter().filter_map(process_sample).collect(),
        _ => Vec::new(),
    }
}

fn is_pair(term: &Term, key: &str) -> bool {
    matches!(term, Term::Tuple(t) if t.elements.len() == 2
        && matches!(&t.elements[0], Term::Atom(a) if a.name == key))
}

/// `{Pid, [{registered_name, _}, {memory, _}, ...]}`; `None` for a process
/// that exited (`undefined`).
fn process_sample(term: &Term) -> Option<ProcessSample> {
    let Term::Tuple(t) = term else { return None };
    let [Term::Pid(pid), Term::List(info)] = t.elements.as_slice() else {
        return None;
    };
    let field = |key: &str| {
        info.elements.iter().find_map(|e| match e {
            Term::Tuple(kv) if is_pair(e, key) => Some(&kv.elements[1]),
            _ => None,
        })
    };
    let count = |key: &str| match field(key) {
        Some(Term::FixInteger(i)) => u64::try_from(i.value).unwrap_or(0),
        Some(Term::BigInteger(b)) => b.to_string().parse().unwrap_or(u64::MAX),
        _ => 0,
    };
    Some(ProcessSample {
        // As pid_to_list/1 prints a pid of the node itself.
        pid: format!("<0.{}.{}>", pid.id, pid.serial),
        name: match field("registered_name") {
            Some(Term::Atom(a)) => a.name.clone(),
            _ => String::new(),
        },
        memory: count("memory"),
        reductions: count("reductions"),
        message_queue_len: count("message_queue_len"),
        current_function: match field("current_function").map(|f| match f {
            Term::Tuple(mfa) => mfa.elements.as_slice(),
            _ => &[],
        }) {
            Some([Term::Atom(m), Term::Atom(f), Term::FixInteger(a)]) => {
                format!("{}:{}/{}", m.name, f.name, a.value)
            }
            _ => String::new(),
        },
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
    fn raw_process_figures_are_read_on_the_host() {
        use erl_dist::term::{Atom, FixInteger, List, Pid, Tuple};
        let pair = |k: &str, v: Term| Term::from(Tuple::from(vec![Atom::from(k).into(), v]));
        let info = |name: Term, mfa: Term| {
            Term::from(List::from(vec![
                pair("registered_name", name),
                pair("memory", FixInteger::from(2848).into()),
                pair("reductions", FixInteger::from(77).into()),
                pair("message_queue_len", FixInteger::from(0).into()),
                pair("current_function", mfa),
            ]))
        };
        let pid = |id| Term::from(Pid::new("hello@h", id, 0, 1));
        let mfa = Term::from(Tuple::from(vec![
            Atom::from("gen_server").into(),
            Atom::from("loop").into(),
            FixInteger::from(7).into(),
        ]));
        let procs = List::from(vec![
            Tuple::from(vec![pid(40), info(Atom::from("code_server").into(), mfa)]).into(),
            Tuple::from(vec![pid(41), Atom::from("undefined").into()]).into(),
            Tuple::from(vec![
                pid(42),
                info(List::nil().into(), Atom::from("undefined").into()),
            ])
            .into(),
        ]);
        let mut term = Term::from(List::from(vec![
            pair("node", Atom::from("hello@h").into()),
            pair("processes", procs.into()),
        ]));
        let read = take_processes(&mut term);
        assert_eq!(read.len(), 2, "an exited process is left out");
        assert_eq!(read[0].pid, "<0.40.0>");
        assert_eq!(read[0].name, "code_server");
        assert_eq!(read[0].memory, 2848);
        assert_eq!(read[0].reductions, 77);
        assert_eq!(read[0].current_function, "gen_server:loop/7");
        assert_eq!(
            (read[1].name.as_str(), read[1].current_function.as_str()),
            ("", "")
        );
        assert!(!term.to_string().contains("processes"), "{term}");
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
