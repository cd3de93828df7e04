//! `unibeam stats NAME`: an instance's metrics history.

use anyhow::Result;
use clap::{Args, ValueEnum};
use std::process::ExitCode;
use std::time::Duration;
use unibeam_lifecycle::paths;
use unibeam_lifecycle::stats::{self, StatSample};
use unibeam_vmm::state::InstanceName;

pub const FAILURE_EXIT: u8 = 1;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Show an instance's metrics history, oldest sample first.
///
/// While an instance runs detached, its monitor samples it every 5 s: the
/// node's memory, process count and run queue (and more: `--format json`
/// has them all, with the 10 biggest processes), and QEMU's own CPU time
/// and resident memory on the host. Samples are kept in the instance's
/// directory, bounded to 8 MiB (hours of them), across restarts, until
/// `unibeam rm`. An instance run with `--no-dist` has QEMU's figures only.
///
/// The monitor takes its interval from UNIBEAM_SAMPLE_SECS, as `run -d`
/// or `start` found it in their environment: whole seconds, 0 for no
/// sampling at all.
///
/// Each text line: the time (UTC), the BEAM's total memory, its process
/// count, its run queue, QEMU's CPU use since the sample before (% of one
/// core) and QEMU's resident memory.
///
///   unibeam stats web --since 10m
///   UNIBEAM_SAMPLE_SECS=1 unibeam start web
///   unibeam stats web --format json | jq '.[-1].beam.memory'
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct StatsArgs {
    /// The instance, as `unibeam ps -a` lists it
    name: InstanceName,
    /// Only samples this recent: seconds, or 30s, 5m, 1h, 2d
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    since: Option<Duration>,
    /// Output format
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

/// `90`, `90s`, `5m`, `1h` or `2d`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "{text:?}: give a number with s, m, h or d, as 30s, 5m or 1h"
            ))
        }
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: give a number with s, m, h or d, as 30s, 5m or 1h"))?;
    n.checked_mul(scale)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?}: too long"))
}

pub fn stats(args: StatsArgs) -> Result<ExitCode> {
    let samples = stats::read(&paths::store()?, &args.name, args.since)?;
    match args.format {
        Format::Json => {
            let all: Vec<_> = samples.iter().map(StatSample::to_json).collect();
            println!("{}", serde_json::to_string_pretty(&all)?);
        }
        Format::Text => print!("{}", table(&samples)),
    }
    Ok(ExitCode::SUCCESS)
}

fn table(samples: &[StatSample]) -> String {
    let mut out = format!(
        "{:<20} {:>10} {:>6} {:>5} {:>7} {:>10}\n",
        "TIME", "MEMORY", "PROCS", "RUNQ", "CPU%", "RSS"
    );
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    for s in samples {
        let beam = s.beam.as_ref();
        out.push_str(&format!(
            "{:<20} {:>10} {:>6} {:>5} {:>7} {:>10}\n",
            utc(s.time_ms / 1000),
            or_dash(s.beam_memory().map(mib)),
            or_dash(beam.map(|b| b.process_count.to_string())),
            or_dash(beam.map(|b| b.run_queue.to_string())),
            or_dash(s.qemu_cpu_percent.map(|p| format!("{p:.1}"))),
            or_dash(s.qemu.map(|q| mib(q.rss_bytes))),
        ));
    }
    out
}

/// Bytes as MiB, one decimal: `23.4M`.
pub fn mib(bytes: u64) -> String {
    format!("{:.1}M", bytes as f64 / f64::from(1 << 20))
}

/// Seconds since the epoch as `2026-12-02T10:21:05Z`.
fn utc(secs: u64) -> String {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("m").is_err());
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_796_213_999), "2026-12-02T12:19:59Z");
    }

    #[test]
    fn a_sample_without_figures_shows_dashes() {
        let bare = StatSample {
            time_ms: 0,
            qemu: None,
            beam: None,
            qemu_cpu_percent: None,
        };
        let text = table(&[bare]);
        let line = text.lines().nth(1).unwrap();
        assert_eq!(line.split_whitespace().filter(|w| *w == "-").count(), 5, "{line}");
    }
}
