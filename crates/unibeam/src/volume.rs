//! `unibeam volume`: create, list, inspect, remove, export and import
//! volumes (ext4 on a sparse file, attached with `run -v NAME:/path`).

use crate::progress::Console;
use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use unibeam_cluster::volume::{parse_size, VolumeName, DEFAULT_VOLUME_BYTES};
use unibeam_lifecycle::volumes::{self, VolumeStore};
use unibeam_lifecycle::{paths, volume_archive};

pub const FAILURE_EXIT: u8 = 1;

/// Manage volumes: state that outlives an instance.
///
/// A volume is a journaled ext4 filesystem in a sparse file under
/// $XDG_STATE_HOME/unibeam/volumes, attached to a VM as a virtio-blk disk
/// and mounted by init before the BEAM starts, writable by the BEAM's user:
///
///   unibeam run -d --name db -v data:/var/lib/app my_app.unibeam
///
/// A guest's fsync reaches the host's disk. One instance at a time may
/// write a volume; `:ro` attachments share it. The host never mounts one.
#[derive(Args)]
pub struct VolumeArgs {
    #[command(subcommand)]
    command: VolumeVerb,
}

#[derive(Subcommand)]
enum VolumeVerb {
    /// Make a volume (`run -v` also makes one on first use, 1G)
    Create {
        name: VolumeName,
        /// Its size, e.g. 512M, 1G or 2T (at least 16M); the file is
        /// sparse, so only what is written takes host disk
        #[arg(long, value_parser = parse_size, default_value_t = DEFAULT_VOLUME_BYTES, hide_default_value = true)]
        size: u64,
    },
    /// List volumes
    Ls {
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Show one volume as JSON: size, file, host bytes, which instances use it
    Inspect { name: VolumeName },
    /// Remove a volume and its data; refused while an instance uses it
    Rm { name: VolumeName },
    /// Write a volume's files to a tar (refused while an instance writes it)
    Export { name: VolumeName, file: PathBuf },
    /// Make a volume from a tar of files (from `export`, or any tar)
    Import {
        name: VolumeName,
        file: PathBuf,
        /// Its size [default: twice the files plus 64M, at least 1G]
        #[arg(long, value_parser = parse_size)]
        size: Option<u64>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

pub fn volume(args: VolumeArgs) -> Result<ExitCode> {
    let store = paths::store()?;
    let volumes = VolumeStore::beside(&store);
    let progress = Console::default();
    match args.command {
        VolumeVerb::Create { name, size } => {
            volumes::create(&volumes, &name, size, None, &progress)?;
            println!("{name}");
        }
        VolumeVerb::Ls { format } => {
            let all = volumes.list();
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&all)?),
                Format::Text => {
                    println!("{:<32} {:>10}", "NAME", "SIZE");
                    for v in all {
                        println!("{:<32} {:>9}M", v.name.as_str(), v.bytes >> 20);
                    }
                }
            }
        }
        VolumeVerb::Inspect { name } => {
            let shown = volumes::inspect(&store, &volumes, &name)?;
            println!("{}", serde_json::to_string_pretty(&shown)?);
        }
        VolumeVerb::Rm { name } => {
            volumes::remove(&store, &volumes, &name)?;
            println!("{name}");
        }
        VolumeVerb::Export { name, file } => {
            let bytes = volume_archive::export(&volumes, &name, &file)?;
            println!("{} ({} bytes)", file.display(), bytes);
        }
        VolumeVerb::Import { name, file, size } => {
            volume_archive::import(&volumes, &name, &file, size, &progress)?;
            println!("{name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
