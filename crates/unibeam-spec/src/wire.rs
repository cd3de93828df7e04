//! What the host and the guest's PID 1 agree on: where the boot spec
//! lives, the I/O ports and console lines that carry verdicts and
//! milestones, and the BEAM's user and distribution port.

/// Where the boot spec lives inside the guest.
pub const BOOT_SPEC_PATH: &str = "/unibeam/boot.json";

/// I/O port of QEMU's `isa-debug-exit` device. A byte `s` written there makes
/// QEMU exit with `(s << 1) | 1`.
pub const DEBUG_EXIT_PORT: u16 = 0x501;

/// Console line prefix with the BEAM's exit status, for people reading the
/// console. The host never parses it: the BEAM writes to the same console.
pub const EXIT_STATUS_MARKER: &str = "unibeam-init: beam exited with status ";

/// I/O port of the `isa-debugcon` device that carries init's verdict to a
/// file on the host. Port I/O needs CAP_SYS_RAWIO, which the BEAM (uid
/// 65534) lacks, so only PID 1 can write there (or a BEAM run with
/// `--root`). Clear of isa-debug-exit (0x501), pvpanic (0x505), fw_cfg
/// (0x510) and SeaBIOS's debug port (0x402).
pub const VERDICT_PORT: u16 = 0x508;

/// How a verdict line starts: `unibeam-verdict KIND STATUS [REASON]\n`.
pub const VERDICT_PREFIX: &str = "unibeam-verdict ";
/// Verdict kind: the BEAM exited (or was killed) with STATUS.
pub const VERDICT_EXITED: &str = "exited";
/// Verdict kind: the kernel's OOM killer ended the BEAM, which exited with STATUS.
pub const VERDICT_OOM_KILLED: &str = "oom-killed";
/// Verdict kind: init itself failed; REASON says why.
pub const VERDICT_INIT_FAILED: &str = "init-failed";

/// How init's first console line starts. Before it, kernel lines such as
/// a panic are the kernel's own; after it, the console carries the app's
/// output too and is never read as a verdict.
pub const INIT_STARTED_MARKER: &str = "unibeam-init: started";

/// The console lines init prints at its boot milestones, in order: the
/// one definition that init prints and the host (the `--timings`
/// timeline, `up` waiting for readiness) looks for. Each line starts with
/// the milestone and may go on with details.
pub mod milestone {
    pub const INIT_STARTED: &str = super::INIT_STARTED_MARKER;
    pub const MODULES_LOADED: &str = "unibeam-init: modules loaded";
    pub const NETWORK_UP: &str = "unibeam-init: network up";
    pub const BEAM_EXECED: &str = "unibeam-init: BEAM exec'd";
    /// The release's applications have started: the instance is ready.
    pub const APPS_STARTED: &str = "unibeam-init: applications started";
}

/// Keys the host presses on the guest's virtio keyboard (QMP `send-key`)
/// to tell init about a snapshot; Linux input key codes, as init reads
/// them from evdev. Only these two: neither is on a keyboard an app sees.
pub mod snapshot_keys {
    /// The guest's state was saved and this same VM carries on: init
    /// lets the BEAM it froze at "applications started" run again.
    pub const SAVED: u16 = 142; // KEY_SLEEP
    /// The guest was restored from a saved state (a resume, or a warm
    /// start from a snapshot): init reseeds the kernel's random pool
    /// with fresh host entropy, then lets the BEAM run.
    pub const RESTORED: u16 = 143; // KEY_WAKEUP
}

/// Console line init prints once a restored guest's BEAM runs again.
pub const RESTORED_MARKER: &str = "unibeam-init: restored";

/// Exit status the guest reports when init itself failed before or around the BEAM.
pub const INIT_FAILURE_STATUS: u8 = 125;

/// TCP port the BEAM's distribution listens on, since the guest has no EPMD.
pub const DIST_PORT: u16 = 4370;

/// The uid/gid the BEAM runs as unless the instance asks for root.
pub const BEAM_UID: u32 = 65534;
