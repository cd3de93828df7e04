//! `unibeam inspect`: where an image's bytes go, by layer and by OTP
//! application, and (with --files) every file with its sha256.

use anyhow::Result;
use clap::{Args, ValueEnum};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use unibeam_image::manifest::ShellInfo;
use unibeam_image::ImageManifest;

pub const FAILURE_EXIT: u8 = 1;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

/// Show what an image holds, or an instance's record as JSON.
///
/// For an image: kernel, each initramfs layer (compressed and unpacked),
/// each OTP application, and optionally every file. The layer sizes add up
/// to initramfs.img's size on disk; image.json carries the same file list,
/// an SBOM of the image.
#[derive(Args)]
pub struct InspectArgs {
    /// Image directory from `unibeam build`, or an instance name
    image: PathBuf,
    /// List every file with its layer, size and sha256
    #[arg(long)]
    files: bool,
    /// Output format
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

fn mb(bytes: u64) -> String {
    format!("{:.2} MB", bytes as f64 / 1e6)
}

pub fn inspect(args: InspectArgs) -> Result<ExitCode> {
    if !args.image.join(unibeam_image::MANIFEST_FILE).is_file() {
        if let Some(name) = args
            .image
            .to_str()
            .and_then(|n| n.parse::<unibeam_vmm::state::InstanceName>().ok())
        {
            let store = unibeam_lifecycle::paths::store()?;
            if let Ok(record) = unibeam_lifecycle::instances::inspect(&store, &name) {
                println!("{}", serde_json::to_string_pretty(&record)?);
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
    // `read` checks every size and offset against the files.
    let m = ImageManifest::read(&args.image)?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&as_json(&m, args.files))?),
        Format::Text => print!("{}", as_text(&m, args.files)),
    }
    Ok(ExitCode::SUCCESS)
}

fn as_json(m: &ImageManifest, files: bool) -> serde_json::Value {
    let apps: Vec<_> = m
        .application_sizes()
        .into_iter()
        .map(|(app, (bytes, count))| json!({"application": app, "bytes": bytes, "files": count}))
        .collect();
    let mut out = json!({
        "release": m.release,
        "erts_version": m.erts_version,
        "kernel": m.kernel,
        "initramfs": m.initramfs,
        "total_bytes": m.total_bytes(),
        "applications": apps,
        "shell": m.shell,
        "warnings": m.warnings,
    });
    if files {
        out["files"] = json!(m.files);
    }
    out
}

/// `shell: /bin/sh (dash), because: os_mon (...); programs: df`
fn shell_line(shell: &ShellInfo) -> String {
    let because = shell.reasons.join("; ");
    let mut line = match (shell.included, shell.reasons.is_empty()) {
        (true, true) => format!("shell: /bin/sh (dash), because: --shell {}", shell.mode.label()),
        (true, false) => format!("shell: /bin/sh (dash), because: {because}"),
        (false, true) => "shell: none (nothing in the release shells out)".to_string(),
        (false, false) => format!("shell: none (--shell {}), though: {because}", shell.mode.label()),
    };
    if !shell.programs.is_empty() {
        line.push_str(&format!("; programs: {}", shell.programs.join(", ")));
    }
    line
}

fn as_text(m: &ImageManifest, files: bool) -> String {
    let mut out = format!(
        "{} {} (ERTS {})\nkernel     {:>10}  {} ({})\ninitramfs  {:>10}  {} layers, {}, {} unpacked\ntotal      {:>10}\n",
        m.release.name,
        m.release.version,
        m.erts_version,
        mb(m.kernel.bytes),
        m.kernel.release,
        m.kernel.origin.label(),
        mb(m.initramfs.bytes),
        m.initramfs.layers.len(),
        m.initramfs.compression,
        mb(m.initramfs.uncompressed_bytes),
        mb(m.total_bytes()),
    );
    out.push_str(&shell_line(&m.shell));
    out.push_str("\n\n");
    out.push_str(&format!(
        "{:<8} {:>12} {:>12} {:>8}\n",
        "layer", "compressed", "unpacked", "entries"
    ));
    for l in &m.initramfs.layers {
        out.push_str(&format!(
            "{:<8} {:>12} {:>12} {:>8}\n",
            l.name.as_str(),
            mb(l.bytes),
            mb(l.uncompressed_bytes),
            l.entries
        ));
    }
    out.push_str(&format!(
        "\n{:<28} {:>12} {:>8}\n",
        "application", "unpacked", "files"
    ));
    for (app, (bytes, count)) in m.application_sizes() {
        out.push_str(&format!("{app:<28} {:>12} {count:>8}\n", mb(bytes)));
    }
    if files {
        out.push_str(&format!(
            "\n{:<6} {:>10}  {:<64}  path\n",
            "layer", "bytes", "sha256"
        ));
        for f in &m.files {
            let sha = f.sha256.as_deref().unwrap_or("-");
            out.push_str(&format!(
                "{:<6} {:>10}  {sha:<64}  {}\n",
                f.layer.as_str(),
                f.bytes,
                f.path
            ));
        }
    }
    out
}
