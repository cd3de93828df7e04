//! `unibeam kernel build`: the specialised guest kernel.

use crate::progress::Console;
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::io::IsTerminal;
use std::process::ExitCode;
use unibeam_image::kbuild;
use unibeam_lifecycle::{paths, Progress};

pub const FAILURE_EXIT: u8 = 1;

/// Manage the guest kernel
#[derive(Args)]
pub struct KernelArgs {
    #[command(subcommand)]
    command: KernelVerb,
}

#[derive(Subcommand)]
enum KernelVerb {
    /// Build the specialised guest kernel from Debian's linux-source-6.1.
    ///
    /// Starts from `tinyconfig` and adds unibeam's config fragment (every
    /// driver built in, no modules): about 2 MB instead of Debian's 14 MB,
    /// and faster to boot. Takes 6-7 minutes on 2 cores. The result is
    /// cached by source version and fragment, and from then on `unibeam
    /// build` uses it unless given `--kernel debian`. Installs the build
    /// packages with apt-get when run as root.
    Build {
        /// Parallel compile jobs [default: the number of CPUs]
        #[arg(short, long)]
        jobs: Option<usize>,
    },
    /// Print the config fragment the specialised kernel is built with
    Fragment,
}

pub fn kernel(args: KernelArgs) -> Result<ExitCode> {
    match args.command {
        KernelVerb::Build { jobs } => build(jobs),
        KernelVerb::Fragment => {
            print!("{}", kbuild::FRAGMENT);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn build(jobs: Option<usize>) -> Result<ExitCode> {
    let jobs = jobs
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1);
    let cache = paths::cache_dir()?;
    let console = Console::default();
    console.begin("kernel");
    // Without a terminal (CI logs) the spinner is hidden: print the steps,
    // and every 250th compiled file, as plain lines instead.
    let plain = !std::io::stderr().is_terminal();
    let compiled = std::cell::Cell::new(0usize);
    let result = kbuild::build(&cache, jobs, &|step| {
        console.step(step);
        if plain {
            let compiling = step.starts_with("compiling");
            if compiling {
                compiled.set(compiled.get() + 1);
            }
            if !compiling || compiled.get() == 250 {
                compiled.set(0);
                eprintln!("unibeam: kernel: {step}");
            }
        }
    });
    console.end();
    let kernel = result.context("building the specialised kernel")?;
    let bytes = std::fs::metadata(&kernel.image)
        .with_context(|| format!("reading {}", kernel.image.display()))?
        .len();
    println!(
        "specialised kernel {} ({:.2} MB): {}",
        kernel.release,
        bytes as f64 / 1e6,
        kernel.image.display()
    );
    Ok(ExitCode::SUCCESS)
}
