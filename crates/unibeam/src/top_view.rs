//! What `unibeam top` shows, drawn from the data alone: the live screen
//! (on ratatui) and the plain-text snapshot of `--once`. Nothing here
//! reads the terminal or the node, so tests render a sample into
//! ratatui's `TestBackend`.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Row, Table};
use ratatui::Frame;
use std::fmt::Write;
use unibeam_dist::metrics::{self, ProcessSample, Rates, Sample, SortKey};

/// `erlang:memory/0`'s types in the order observer shows them; any other
/// type the node reports follows.
const MEMORY_ORDER: [&str; 9] = [
    "total",
    "processes",
    "processes_used",
    "system",
    "atom",
    "atom_used",
    "binary",
    "code",
    "ets",
];

/// Everything one frame shows.
pub struct View<'a> {
    /// The running instances, in `ps` order, and the one shown.
    pub instances: &'a [String],
    pub current: usize,
    /// The latest figures, and the rates since the sample before them.
    pub sample: Option<&'a Sample>,
    pub rates: Option<Rates>,
    pub sort: SortKey,
    /// Why the figures are missing or stale (the node is unreachable...).
    pub problem: Option<&'a str>,
}

pub fn sort_name(key: SortKey) -> &'static str {
    match key {
        SortKey::Memory => "memory",
        SortKey::Reductions => "reductions",
        SortKey::MessageQueue => "message queue",
    }
}

/// `bytes` in B, KiB, MiB or GiB.
pub fn bytes(n: f64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} {}", UNITS[0])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The memory types in display order, with their sizes.
fn memory_rows(sample: &Sample) -> Vec<(String, u64)> {
    let known = MEMORY_ORDER
        .iter()
        .filter_map(|k| sample.memory.get(*k).map(|v| (k.to_string(), *v)));
    let others = sample
        .memory
        .iter()
        .filter(|(k, _)| !MEMORY_ORDER.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), *v));
    known.chain(others).collect()
}

/// Each count with its limit and how full it is.
fn count_rows(sample: &Sample) -> Vec<(&'static str, String)> {
    let row = |count: u64, limit: u64| {
        let used = if limit == 0 {
            0.0
        } else {
            count as f64 * 100.0 / limit as f64
        };
        format!("{count} / {limit} ({used:.1}%)")
    };
    vec![
        ("processes", row(sample.process_count, sample.process_limit)),
        ("ports", row(sample.port_count, sample.port_limit)),
        ("atoms", row(sample.atom_count, sample.atom_limit)),
        ("ets tables", row(sample.ets_count, sample.ets_limit)),
    ]
}

/// Run queues and the rates; the rates wait for a second sample.
fn load_rows(sample: &Sample, rates: Option<Rates>) -> Vec<(&'static str, String)> {
    let lengths: Vec<String> = sample.run_queue_lengths.iter().map(u64::to_string).collect();
    let mut rows = vec![
        ("run queue", sample.run_queue.to_string()),
        ("run queues", format!("[{}]", lengths.join(" "))),
        ("schedulers", sample.schedulers.to_string()),
    ];
    match rates {
        Some(r) => rows.extend([
            ("utilisation", format!("{:.1}%", r.scheduler_utilisation * 100.0)),
            ("reductions/s", format!("{:.0}", r.reductions_per_s)),
            ("io in/s", bytes(r.io_input_bytes_per_s)),
            ("io out/s", bytes(r.io_output_bytes_per_s)),
        ]),
        None => rows.push(("rates", "in a second".into())),
    }
    rows
}

fn label_lines<'a>(rows: impl IntoIterator<Item = (String, String)>) -> Vec<Line<'a>> {
    rows.into_iter()
        .map(|(k, v)| Line::from(vec![Span::raw(format!("{k:<15}")).bold(), Span::raw(v)]))
        .collect()
}

/// The screen: instances, the three panes of figures, the processes and
/// the keys.
pub fn draw(frame: &mut Frame, view: &View) {
    let figures = view.sample.map_or(3, |s| {
        let tallest = memory_rows(s).len().max(load_rows(s, view.rates).len()).max(4);
        tallest as u16 + 2
    });
    let [head, panes, procs, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(figures),
        Constraint::Min(4),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(Paragraph::new(header(view)), head);
    frame.render_widget(Paragraph::new(footer(view)), foot);
    let Some(sample) = view.sample else {
        let waiting = view
            .problem
            .map_or("waiting for the first sample", |_| "no figures");
        frame.render_widget(Paragraph::new(waiting).block(Block::bordered()), panes);
        return;
    };
    let [memory, counts, load] = Layout::horizontal([
        Constraint::Percentage(32),
        Constraint::Percentage(34),
        Constraint::Percentage(34),
    ])
    .areas(panes);
    let memory_lines = memory_rows(sample).into_iter().map(|(k, v)| (k, bytes(v as f64)));
    frame.render_widget(
        Paragraph::new(label_lines(memory_lines)).block(Block::bordered().title(" memory ")),
        memory,
    );
    let count_lines = count_rows(sample).into_iter().map(|(k, v)| (k.to_string(), v));
    frame.render_widget(
        Paragraph::new(label_lines(count_lines)).block(Block::bordered().title(" counts / limits ")),
        counts,
    );
    let load_lines = load_rows(sample, view.rates)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v));
    frame.render_widget(
        Paragraph::new(label_lines(load_lines)).block(Block::bordered().title(" load ")),
        load,
    );
    draw_processes(frame, procs, sample, view.sort);
}

fn header<'a>(view: &View) -> Line<'a> {
    let mut spans = vec![Span::raw("unibeam top ").bold()];
    for (i, name) in view.instances.iter().enumerate() {
        let tab = Span::raw(format!(" {name} "));
        spans.push(if i == view.current { tab.reversed() } else { tab });
    }
    if let Some(s) = view.sample {
        spans.push(Span::raw(format!("  node {}", s.node)));
    }
    Line::from(spans)
}

fn footer<'a>(view: &View) -> Line<'a> {
    match view.problem {
        Some(problem) => Line::from(Span::raw(problem.to_string()).fg(Color::Red)),
        None => Line::from("sort: m memory, r reductions, l message queue · Tab/←/→ instance · q quit".dim()),
    }
}

fn draw_processes(frame: &mut Frame, area: Rect, sample: &Sample, sort: SortKey) {
    let rows = area.height.saturating_sub(3) as usize;
    let marked = |title: &'static str, key: SortKey| {
        if key == sort {
            Line::from(format!("{title}▼")).add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
        } else {
            Line::from(title).bold()
        }
    };
    let head = Row::new(vec![
        Line::from("PID").bold(),
        Line::from("NAME").bold(),
        marked("MEMORY", SortKey::Memory).right_aligned(),
        marked("REDUCTIONS", SortKey::Reductions).right_aligned(),
        marked("MSGQ", SortKey::MessageQueue).right_aligned(),
        Line::from("CURRENT FUNCTION").bold(),
    ]);
    let body = metrics::top(sample, sort, rows).into_iter().map(|p| {
        Row::new(vec![
            Line::from(p.pid.clone()),
            Line::from(p.name.clone()),
            Line::from(bytes(p.memory as f64)).right_aligned(),
            Line::from(p.reductions.to_string()).right_aligned(),
            Line::from(p.message_queue_len.to_string()).right_aligned(),
            Line::from(p.current_function.clone()),
        ])
        .style(if p.message_queue_len > 0 {
            Style::new().fg(Color::Yellow)
        } else {
            Style::new()
        })
    });
    let widths = [
        Constraint::Length(13),
        Constraint::Length(24),
        Constraint::Length(11),
        Constraint::Length(12),
        Constraint::Length(6),
        Constraint::Fill(1),
    ];
    let title = format!(
        " processes: top {} of {} by {} ",
        rows.min(sample.processes.len()),
        sample.processes.len(),
        sort_name(sort)
    );
    frame.render_widget(
        Table::new(body, widths)
            .header(head)
            .block(Block::bordered().title(title)),
        area,
    );
}

/// `--once`'s text: the same figures, one per line, then `n` processes
/// (a long name pushes its line's later columns right, never into it).
pub fn snapshot(instance: &str, sample: &Sample, rates: Option<Rates>, sort: SortKey, n: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "instance {instance}  node {}", sample.node);
    let section = |out: &mut String, title: &str, rows: Vec<(String, String)>| {
        let _ = writeln!(out, "\n{title}");
        for (k, v) in rows {
            let _ = writeln!(out, "  {k:<16}{v}");
        }
    };
    let memory = memory_rows(sample)
        .into_iter()
        .map(|(k, v)| (k, bytes(v as f64)))
        .collect();
    section(&mut out, "memory", memory);
    let counts = count_rows(sample)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    section(&mut out, "counts / limits", counts);
    let load = load_rows(sample, rates)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    section(&mut out, "load", load);
    let _ = writeln!(out, "\ntop processes by {}", sort_name(sort));
    let line = |p: &ProcessSample| {
        format!(
            "  {:<12} {:<23} {:>10} {:>11} {:>5}  {}",
            p.pid,
            p.name,
            bytes(p.memory as f64),
            p.reductions,
            p.message_queue_len,
            p.current_function
        )
    };
    let _ = writeln!(
        out,
        "  {:<12} {:<23} {:>10} {:>11} {:>5}  CURRENT FUNCTION",
        "PID", "NAME", "MEMORY", "REDUCTIONS", "MSGQ"
    );
    for p in metrics::top(sample, sort, n) {
        let _ = writeln!(out, "{}", line(p).trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;
    use std::collections::BTreeMap;

    fn process(pid: &str, name: &str, memory: u64, queue: u64) -> ProcessSample {
        ProcessSample {
            pid: pid.into(),
            name: name.into(),
            memory,
            reductions: 1000 - memory,
            message_queue_len: queue,
            current_function: "gen_server:loop/7".into(),
        }
    }

    fn sample() -> Sample {
        Sample {
            node: "hello@hello".into(),
            memory: BTreeMap::from([
                ("total".to_string(), 24 * 1024 * 1024),
                ("processes".to_string(), 5 * 1024 * 1024),
                ("code".to_string(), 9 * 1024 * 1024),
                ("ets".to_string(), 700 * 1024),
            ]),
            process_count: 57,
            process_limit: 262144,
            port_count: 3,
            port_limit: 65536,
            atom_count: 14012,
            atom_limit: 1048576,
            ets_count: 21,
            ets_limit: 8192,
            run_queue: 1,
            run_queue_lengths: vec![1, 0],
            reductions: 0,
            io_input: 0,
            io_output: 0,
            runtime_ms: 0,
            wall_ms: 0,
            schedulers: 2,
            processes: vec![
                process("<0.1.0>", "", 10, 0),
                process("<0.50.0>", "code_server", 900, 0),
                process("<0.60.0>", "hello_web", 300, 4),
            ],
        }
    }

    fn screen(view: &View) -> String {
        let mut terminal = Terminal::new(TestBackend::new(120, 30)).unwrap();
        terminal.draw(|f| draw(f, view)).unwrap();
        let buffer = terminal.backend().buffer();
        let mut text = String::new();
        for y in 0..buffer.area.height {
            for x in 0..buffer.area.width {
                text.push_str(buffer[(x, y)].symbol());
            }
            text.push('\n');
        }
        text
    }

    #[test]
    fn the_screen_shows_memory_counts_rates_and_processes() {
        let s = sample();
        let names = ["hello".to_string(), "web".to_string()];
        let rates = Rates {
            reductions_per_s: 12345.0,
            io_input_bytes_per_s: 2048.0,
            io_output_bytes_per_s: 0.0,
            scheduler_utilisation: 0.125,
        };
        let text = screen(&View {
            instances: &names,
            current: 1,
            sample: Some(&s),
            rates: Some(rates),
            sort: SortKey::Memory,
            problem: None,
        });
        for needle in [
            "hello@hello",
            " web ",
            "total",
            "24.0 MiB",
            "code",
            "57 / 262144",
            "14012 / 1048576",
            "21 / 8192",
            "[1 0]",
            "12345",
            "2.0 KiB",
            "12.5%",
            "code_server",
            "hello_web",
            "gen_server:loop/7",
            "MEMORY▼",
        ] {
            assert!(text.contains(needle), "no {needle:?} in\n{text}");
        }
        // By memory, code_server (900) comes before hello_web (300).
        assert!(
            text.find("code_server").unwrap() < text.find("hello_web").unwrap(),
            "{text}"
        );
    }

    #[test]
    fn the_sort_key_orders_the_list_and_a_problem_shows() {
        let s = sample();
        let names = ["hello".to_string()];
        let text = screen(&View {
            instances: &names,
            current: 0,
            sample: Some(&s),
            rates: None,
            sort: SortKey::MessageQueue,
            problem: Some("instance hello is not running"),
        });
        assert!(text.contains("MSGQ▼") && text.contains("in a second"), "{text}");
        assert!(
            text.find("hello_web").unwrap() < text.find("code_server").unwrap(),
            "{text}"
        );
        assert!(text.contains("instance hello is not running"), "{text}");
    }

    #[test]
    fn a_screen_without_a_sample_says_it_waits() {
        let names = ["hello".to_string()];
        let text = screen(&View {
            instances: &names,
            current: 0,
            sample: None,
            rates: None,
            sort: SortKey::Memory,
            problem: None,
        });
        assert!(text.contains("waiting for the first sample"), "{text}");
    }

    #[test]
    fn the_snapshot_is_plain_text() {
        let text = snapshot("hello", &sample(), None, SortKey::Reductions, 2);
        assert!(text.starts_with("instance hello  node hello@hello\n"), "{text}");
        assert!(text.contains("  processes       57 / 262144 (0.0%)"), "{text}");
        assert!(text.contains("top processes by reductions"), "{text}");
        // Reductions: <0.1.0> (990) then hello_web (700); code_server is third.
        assert!(text.contains("<0.1.0>") && text.contains("hello_web") && !text.contains("code_server"));
        assert!(text.is_ascii(), "{text}");
    }

    #[test]
    fn bytes_take_binary_units() {
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(1536.0), "1.5 KiB");
        assert_eq!(bytes(3.0 * 1024.0 * 1024.0 * 1024.0), "3.0 GiB");
    }
}
