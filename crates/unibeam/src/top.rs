//! `unibeam top [NAME]`: a running instance's BEAM, live, or one snapshot
//! for scripts.

use self::view::View;
use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use serde_json::json;
use std::process::ExitCode;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};
use unibeam_dist::metrics::{self, Rates, Sample, SortKey};
use unibeam_dist::Node;
use unibeam_lifecycle::instances::{self, Listed};
use unibeam_lifecycle::{paths, remote};
use unibeam_vmm::state::{InstanceName, Store};

// The screen and the text snapshot, drawn from the data alone.
#[path = "top_view.rs"]
mod view;

pub const FAILURE_EXIT: u8 = 1;

/// How often the figures are read.
const REFRESH: Duration = Duration::from_secs(1);
/// How many processes `--once` lists.
const ONCE_TOP: usize = 20;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum Sort {
    Memory,
    Reductions,
    #[value(name = "queue")]
    MessageQueue,
}

impl From<Sort> for SortKey {
    fn from(s: Sort) -> SortKey {
        match s {
            Sort::Memory => SortKey::Memory,
            Sort::Reductions => SortKey::Reductions,
            Sort::MessageQueue => SortKey::MessageQueue,
        }
    }
}

/// Watch a running instance's BEAM: memory, counts, load and its biggest processes.
///
/// Refreshed every second: erlang:memory() by type; process, port, atom
/// and ETS counts against their limits; run queue lengths, reductions/s,
/// I/O bytes/s and scheduler utilisation; the top processes by memory,
/// reductions or message queue, with registered name and current function.
/// Without NAME it shows the first running instance.
///
/// Keys: m, r, l sort by memory, reductions, message queue length;
/// Tab and →, Shift-Tab and ← go to the next or previous running
/// instance; q or Esc quits. `top` only reads: it never stops the node.
///
/// `--once` takes two samples a second apart (for the rates) and prints
/// them, as text or as one JSON object with the 20 biggest processes.
///
///   unibeam top web
///   unibeam top web --once --format json | jq .memory.total
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct TopArgs {
    /// The instance, as `unibeam ps` lists it; the first running one if omitted
    name: Option<InstanceName>,
    /// Print one snapshot and exit
    #[arg(long)]
    once: bool,
    /// Output format of --once
    #[arg(long, value_enum, default_value = "text", requires = "once")]
    format: Format,
    /// Sort processes by
    #[arg(long, value_enum, default_value = "memory")]
    sort: Sort,
    /// Seconds to wait for the node, for each step
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: u64,
}

pub fn top(args: TopArgs) -> Result<ExitCode> {
    let store = paths::store()?;
    let timeout = Duration::from_secs(args.timeout);
    let running = running(&store);
    let name = match args.name {
        Some(name) => name,
        None => match running.first() {
            Some(first) => first.clone(),
            None => bail!("no instance is running; `unibeam run -d IMAGE` starts one"),
        },
    };
    // An unknown, stopped or unreachable instance fails here, before the
    // screen is taken over.
    let node = remote::connect(&store, &name, timeout)?;
    if args.once {
        once(&name, &node, args.format, args.sort.into())
    } else {
        live(store, running, name, node, args.sort.into(), timeout)
    }
}

/// The running instances, in `ps` order.
fn running(store: &Store) -> Vec<InstanceName> {
    instances::list(store, false)
        .into_iter()
        .filter_map(|l| match l {
            Listed::Instance(r) => Some(r.name),
            Listed::Broken { .. } => None,
        })
        .collect()
}

fn read(name: &InstanceName, node: &Node) -> Result<Sample> {
    Ok(remote::sample_on(name, node)?)
}

fn once(name: &InstanceName, node: &Node, format: Format, sort: SortKey) -> Result<ExitCode> {
    let first = read(name, node)?;
    std::thread::sleep(REFRESH);
    let second = read(name, node)?;
    let rates = metrics::rates(&first, &second);
    match format {
        Format::Json => println!("{}", snapshot_json(name.as_str(), &second, rates, sort)),
        Format::Text => print!(
            "{}",
            view::snapshot(name.as_str(), &second, rates, sort, ONCE_TOP)
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn snapshot_json(instance: &str, s: &Sample, rates: Option<Rates>, sort: SortKey) -> serde_json::Value {
    json!({
        "instance": instance,
        "node": s.node,
        "memory": s.memory,
        "process_count": s.process_count,
        "process_limit": s.process_limit,
        "port_count": s.port_count,
        "port_limit": s.port_limit,
        "atom_count": s.atom_count,
        "atom_limit": s.atom_limit,
        "ets_count": s.ets_count,
        "ets_limit": s.ets_limit,
        "run_queue": s.run_queue,
        "run_queue_lengths": s.run_queue_lengths,
        "schedulers": s.schedulers,
        "rates": rates,
        "sort": view::sort_name(sort),
        "top": metrics::top(s, sort, ONCE_TOP),
    })
}

/// One reading of one instance, from the sampling thread.
struct Fetched {
    instance: InstanceName,
    result: Result<Sample, String>,
}

/// Reads `name`'s figures every second on a thread of its own, so keys
/// answer while the node does; a name from `wanted` switches instance.
fn sampler(
    store: Store,
    mut name: InstanceName,
    node: Node,
    timeout: Duration,
    wanted: Receiver<InstanceName>,
    out: Sender<Fetched>,
) {
    let mut node = Some(node);
    loop {
        let started = Instant::now();
        let result = match node.take() {
            Some(n) => read(&name, &n).map(|s| (s, n)),
            None => remote::connect(&store, &name, timeout)
                .map_err(anyhow::Error::from)
                .and_then(|n| read(&name, &n).map(|s| (s, n))),
        };
        let result = match result {
            Ok((sample, n)) => {
                node = Some(n);
                Ok(sample)
            }
            // The connection is dropped: the next round reconnects.
            Err(e) => Err(format!("{e:#}")),
        };
        let instance = name.clone();
        if out.send(Fetched { instance, result }).is_err() {
            return;
        }
        match wanted.recv_timeout(REFRESH.saturating_sub(started.elapsed())) {
            Ok(next) => {
                name = wanted.try_iter().last().unwrap_or(next);
                node = None;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// What the screen shows, between frames.
struct App {
    store: Store,
    instances: Vec<InstanceName>,
    current: InstanceName,
    previous: Option<Sample>,
    latest: Option<Sample>,
    problem: Option<String>,
    sort: SortKey,
}

enum Action {
    Nothing,
    Redraw,
    Switch,
    Quit,
}

impl App {
    fn on_key(&mut self, key: KeyEvent) -> Action {
        if key.kind == KeyEventKind::Release {
            return Action::Nothing;
        }
        let ctrl_c = key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c');
        match key.code {
            _ if ctrl_c => Action::Quit,
            KeyCode::Char('q') | KeyCode::Esc => Action::Quit,
            KeyCode::Char('m') => self.sort_by(SortKey::Memory),
            KeyCode::Char('r') => self.sort_by(SortKey::Reductions),
            KeyCode::Char('l') => self.sort_by(SortKey::MessageQueue),
            KeyCode::Tab | KeyCode::Right => self.step(1),
            KeyCode::BackTab | KeyCode::Left => self.step(-1),
            _ => Action::Nothing,
        }
    }

    fn sort_by(&mut self, key: SortKey) -> Action {
        self.sort = key;
        Action::Redraw
    }

    /// To the next (or previous) running instance, as `ps` lists them now.
    fn step(&mut self, by: isize) -> Action {
        self.instances = running(&self.store);
        if !self.instances.contains(&self.current) {
            self.instances.insert(0, self.current.clone());
        }
        let here = self
            .instances
            .iter()
            .position(|n| *n == self.current)
            .unwrap_or(0) as isize;
        let len = self.instances.len() as isize;
        let next = self.instances[(here + by).rem_euclid(len) as usize].clone();
        if next == self.current {
            return Action::Redraw;
        }
        self.current = next;
        self.previous = None;
        self.latest = None;
        self.problem = Some(format!("connecting to {}…", self.current));
        Action::Switch
    }

    fn on_fetched(&mut self, fetched: Fetched) {
        if fetched.instance != self.current {
            return; // read before a switch
        }
        match fetched.result {
            Ok(sample) => {
                self.previous = self.latest.replace(sample);
                self.problem = None;
            }
            Err(e) => self.problem = Some(e),
        }
    }

    fn draw(&self, frame: &mut ratatui::Frame) {
        let names: Vec<String> = self.instances.iter().map(|n| n.to_string()).collect();
        let rates = match (&self.previous, &self.latest) {
            (Some(a), Some(b)) => metrics::rates(a, b),
            _ => None,
        };
        view::draw(
            frame,
            &View {
                instances: &names,
                current: self
                    .instances
                    .iter()
                    .position(|n| *n == self.current)
                    .unwrap_or(0),
                sample: self.latest.as_ref(),
                rates,
                sort: self.sort,
                problem: self.problem.as_deref(),
            },
        );
    }
}

/// Gives the terminal back (cooked mode, the main screen) however `live`
/// ends: by q, by an error or by a panic.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

fn live(
    store: Store,
    mut instances: Vec<InstanceName>,
    name: InstanceName,
    node: Node,
    sort: SortKey,
    timeout: Duration,
) -> Result<ExitCode> {
    if !instances.contains(&name) {
        instances.insert(0, name.clone());
    }
    let (wanted_tx, wanted_rx) = mpsc::channel();
    let (fetched_tx, fetched_rx) = mpsc::channel();
    let thread_store = store.clone();
    let first = name.clone();
    std::thread::spawn(move || sampler(thread_store, first, node, timeout, wanted_rx, fetched_tx));
    let mut app = App {
        store,
        instances,
        current: name,
        previous: None,
        latest: None,
        problem: None,
        sort,
    };
    let _restore = Restore;
    let mut terminal = ratatui::try_init()?;
    terminal.draw(|f| app.draw(f))?;
    loop {
        let mut redraw = false;
        while let Ok(fetched) = fetched_rx.try_recv() {
            app.on_fetched(fetched);
            redraw = true;
        }
        if event::poll(Duration::from_millis(100))? {
            match event::read()? {
                Event::Key(key) => match app.on_key(key) {
                    Action::Quit => break,
                    Action::Switch => {
                        // The thread only ends with the screen.
                        let _ = wanted_tx.send(app.current.clone());
                        redraw = true;
                    }
                    Action::Redraw => redraw = true,
                    Action::Nothing => {}
                },
                Event::Resize(..) => redraw = true,
                _ => {}
            }
        }
        if redraw {
            terminal.draw(|f| app.draw(f))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
