//! unibeam-init: PID 1 of a unibeam microVM.
//!
//! It mounts the pseudo-filesystems, loads the NIC's modules, configures
//! the network, starts the release's BEAM as an unprivileged user,
//! supervises it, applies the exit policy, and finally powers the VM off
//! with its verdict: the BEAM's exit status, an OOM kill, or its own failure.

mod boot;
mod clock;
mod dhcp;
mod kmod;
mod log;
mod net;
mod platform;
mod power;
mod secrets;
mod stop;
mod supervise;
mod thaw;
mod volumes;

use platform::{Platform, Real};
use power::Verdict;
use std::time::Duration;
use thiserror::Error;
use unibeam_spec::{BootSpec, ExitPolicy, BOOT_SPEC_PATH};

#[derive(Debug, Error)]
enum InitError {
    #[error("{BOOT_SPEC_PATH}")]
    ReadSpec(#[source] std::io::Error),
    #[error("{BOOT_SPEC_PATH}")]
    ParseSpec(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    #[error(transparent)]
    Supervise(#[from] supervise::SuperviseError),
    #[error(transparent)]
    Secret(#[from] secrets::SecretError),
}

fn read_spec() -> Result<BootSpec, InitError> {
    let text = std::fs::read_to_string(BOOT_SPEC_PATH).map_err(InitError::ReadSpec)?;
    BootSpec::from_json(&text).map_err(|e| InitError::ParseSpec(e.into()))
}

/// Lets the unprivileged BEAM listen on ports below 1024, as root could.
fn allow_low_ports() {
    let knob = "/proc/sys/net/ipv4/ip_unprivileged_port_start";
    if let Err(e) = std::fs::write(knob, "0") {
        log!("warning: {knob}: {e}");
    }
}

/// Everything between the kernel handing over and the last BEAM exit.
fn run(p: &mut impl Platform) -> Result<Verdict, InitError> {
    log::milestone(unibeam_spec::milestone::INIT_STARTED, " (kernel -> init)");
    let spec = read_spec()?;
    // Ctrl-Alt-Del then arrives as SIGINT instead of an instant reboot.
    let _ = nix::sys::reboot::set_cad_enabled(false);
    boot::bring_up(p, &spec)?;
    secrets::fetch(spec.instance.cookie_from.as_ref())?;
    clock::ensure_wall_clock();
    clock::wait_for_entropy(Duration::from_secs(10));
    if !spec.instance.run_as_root {
        allow_low_ports();
    }
    let mut events = supervise::Events {
        signals: supervise::signal_fd()?,
        buttons: supervise::open_power_buttons(),
    };
    if events.buttons.is_empty() {
        log!("no input device sends the power key: a graceful stop needs SIGTERM");
    }
    let timeout = Duration::from_secs(u64::from(spec.instance.stop_timeout_s));
    loop {
        let beam = supervise::spawn_beam(&spec)?;
        let what = format!(": {} {} (pid {beam})", spec.release.name, spec.release.version);
        log::milestone(unibeam_spec::milestone::BEAM_EXECED, &what);
        let exit = supervise::supervise(p, beam, &mut events, timeout);
        let verdict = if exit.oom_killed {
            log!("BEAM killed by the kernel's OOM killer (status {})", exit.status);
            Verdict::OomKilled(exit.status)
        } else {
            log!("BEAM exited with status {}", exit.status);
            Verdict::Exited(exit.status)
        };
        if let Some(slogan) = supervise::crash_slogan("/tmp/erl_crash.dump") {
            log!("crash dump: {slogan}");
        }
        if exit.stopped {
            return Ok(verdict);
        }
        match spec.instance.on_exit {
            ExitPolicy::Poweroff => return Ok(verdict),
            ExitPolicy::Reboot => log!("on-exit reboot: starting the BEAM again"),
            ExitPolicy::Hang => {
                log!("on-exit hang: the VM stays up; stop it to power off");
                events.wait_for_stop();
                return Ok(verdict);
            }
        }
    }
}

fn main() {
    if std::process::id() != 1 {
        eprintln!("unibeam-init is the PID 1 of a unibeam microVM; it does nothing elsewhere");
        std::process::exit(2);
    }
    // A panic in PID 1 would panic the kernel; report it and power off
    // instead. A hook, not catch_unwind: the guest build aborts on panic
    // (Cargo.toml's `guest` profile), and a hook covers every thread.
    std::panic::set_hook(Box::new(|info| {
        log!("fatal: init panicked: {info}");
        power::off(&Verdict::InitFailed(format!("init panicked: {info}")))
    }));
    let mut platform = Real;
    let verdict = run(&mut platform).unwrap_or_else(|e| {
        let why = log::chain(&e);
        log!("fatal: {why}");
        Verdict::InitFailed(why)
    });
    platform.power_off(&verdict)
}
