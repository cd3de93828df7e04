//! unibeam-init: PID 1 of a unibeam microVM.
//!
//! It mounts the pseudo-filesystems, loads the NIC's modules, configures
//! the network, starts the release's BEAM, supervises it, and finally powers
//! the VM off with the BEAM's exit status.

mod kmod;
mod log;
mod mounts;
mod net;
mod power;
mod supervise;

use std::panic;
use unibeam_spec::{BootSpec, BOOT_SPEC_PATH, INIT_FAILURE_STATUS};

fn read_spec() -> Result<BootSpec, String> {
    let text = std::fs::read_to_string(BOOT_SPEC_PATH).map_err(|e| format!("{BOOT_SPEC_PATH}: {e}"))?;
    BootSpec::from_json(&text).map_err(|e| format!("{BOOT_SPEC_PATH}: {e}"))
}

/// Everything between the kernel handing over and the BEAM exiting.
fn boot() -> Result<u8, String> {
    log!("started (kernel -> init)");
    mounts::mount_all()?;
    // Ctrl-Alt-Del then arrives as SIGINT instead of an instant reboot.
    let _ = nix::sys::reboot::set_cad_enabled(false);
    let spec = read_spec()?;
    kmod::load_all(&spec.modules)?;
    log!("modules loaded ({})", spec.modules.len());
    net::configure(&spec.network, &spec.hostname)?;
    log!(
        "network up: {} {}/{}",
        spec.network.interface,
        spec.network.address,
        spec.network.prefix_len
    );
    let signals = supervise::signal_fd()?;
    let buttons = supervise::open_power_buttons();
    let beam = supervise::spawn_beam(&spec.release)?;
    log!(
        "BEAM exec'd: {} {} (pid {beam})",
        spec.release.name,
        spec.release.version
    );
    let status = supervise::supervise(beam, &signals, buttons);
    log!("BEAM exited with status {status}");
    Ok(status)
}

fn main() {
    if std::process::id() != 1 {
        eprintln!("unibeam-init is the PID 1 of a unibeam microVM; it does nothing elsewhere");
        std::process::exit(2);
    }
    // A panic in PID 1 would panic the kernel; report it and power off instead.
    let status = match panic::catch_unwind(boot) {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => {
            log!("fatal: {e}");
            INIT_FAILURE_STATUS
        }
        Err(_) => {
            log!("fatal: init panicked");
            INIT_FAILURE_STATUS
        }
    };
    power::off(status)
}
