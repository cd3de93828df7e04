//! Snapshots, guest side. With `freeze_for_snapshot`, the BEAM suspends
//! its own processes once its applications have started (unibeam-spec
//! quiesce.rs) and prints the marker; init then stops it (SIGSTOP), so
//! the host saves a guest whose app runs no code. The host then presses a
//! key (see `unibeam_spec::snapshot_keys`): SAVED lets this same BEAM go
//! on; RESTORED means this guest is a copy brought back from a saved
//! state, so the kernel's random pool is reseeded with fresh host entropy
//! before the BEAM runs again, and the BEAM is handed fresh bytes in
//! [`THAW_FILE`] to reseed OpenSSL's generator before it resumes its
//! processes: two copies of one snapshot must not share random numbers.
//!
//! The clocks need nothing here: the host moves the guest's TSC and timer
//! clock on by the time the state spent on disk as it loads it
//! (unibeam-vmm snapstream.rs), so monotonic and wall-clock time, and the
//! BEAM's Erlang system time, are right when the guest runs again.

use crate::log;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use unibeam_spec::{snapshot_keys, THAW_FILE};

/// The BEAM stopped for a snapshot.
static FROZEN: Mutex<Option<Frozen>> = Mutex::new(None);
/// Only the first BEAM of a boot is frozen: the host saves once.
static FROZE_ONCE: AtomicBool = AtomicBool::new(false);
/// A frozen BEAM runs on by itself after the guest has run this long
/// with no word from the host (it died, or lost the QMP socket): a guest
/// is never wedged.
const FREEZE_LIMIT: Duration = Duration::from_secs(60);
/// While frozen, init wakes at least this often to count the time.
const SLICE: Duration = Duration::from_secs(1);
/// A wake this much later than asked for means the clock jumped: the
/// guest was saved and is now restored (its clocks move on by the time
/// on disk), or stood paused. That time is not the host's silence.
const JUMP: Duration = Duration::from_secs(5);

/// A frozen BEAM, and how much of [`FREEZE_LIMIT`] the guest has spent
/// running since. Counted wake by wake rather than from a start time:
/// restoring a snapshot older than the limit would otherwise let the BEAM
/// run on at once, before the host's RESTORED key, and skip its reseed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Frozen {
    beam: Pid,
    ran: Duration,
    seen: Instant,
}

impl Frozen {
    /// `now`'s wake counted in: the time since the last one, unless the
    /// clock jumped.
    fn tick(self, now: Instant) -> Frozen {
        let gap = now.saturating_duration_since(self.seen);
        let ran = if gap > SLICE + JUMP {
            self.ran
        } else {
            self.ran + gap
        };
        Frozen {
            ran,
            seen: now,
            ..self
        }
    }

    fn left(self) -> Duration {
        FREEZE_LIMIT.saturating_sub(self.ran)
    }
}
/// Bytes of host entropy mixed in on a restore: 512 bits.
const RESEED_BYTES: usize = 64;

/// Stops the BEAM for the snapshot; called when its applications have
/// started, before the milestone the host waits for is printed.
pub fn freeze(beam: Pid) {
    if FROZE_ONCE.swap(true, Ordering::SeqCst) {
        return;
    }
    if let Err(e) = kill(beam, Signal::SIGSTOP) {
        log!("warning: pausing the BEAM for the snapshot: {e}");
        hand_over(&[]);
        return;
    }
    *FROZEN.lock().unwrap_or_else(|e| e.into_inner()) = Some(Frozen {
        beam,
        ran: Duration::ZERO,
        seen: Instant::now(),
    });
    log!("BEAM paused for the snapshot");
}

/// How long init may wait for events before [`enforce`] must run.
pub fn wait() -> Option<Duration> {
    let frozen = FROZEN.lock().unwrap_or_else(|e| e.into_inner());
    frozen.map(|f| f.left().min(SLICE))
}

/// Lets a BEAM that the guest has kept frozen for [`FREEZE_LIMIT`] go on.
pub fn enforce(now: Instant) {
    let late = {
        let mut frozen = FROZEN.lock().unwrap_or_else(|e| e.into_inner());
        *frozen = frozen.map(|f| f.tick(now));
        frozen.is_some_and(|f| f.left().is_zero())
    };
    if late {
        log!(
            "no word from the host {}s after pausing for the snapshot; the BEAM runs on",
            FREEZE_LIMIT.as_secs()
        );
        thaw();
    }
}

/// Acts on a snapshot key; false for any other key.
pub fn on_key(code: u16) -> bool {
    match code {
        snapshot_keys::SAVED => thaw(),
        snapshot_keys::RESTORED => restored(),
        _ => return false,
    }
    true
}

/// Lets a frozen BEAM go on; a stop asked for while it is frozen needs
/// it running to see SIGTERM.
pub fn thaw() {
    thaw_with(&[]);
}

/// Leaves `fresh` (empty: nothing to reseed) for the BEAM's waiting
/// expression, then lets the BEAM run.
fn thaw_with(fresh: &[u8]) {
    hand_over(fresh);
    let frozen = FROZEN.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(Frozen { beam, .. }) = frozen {
        let _ = kill(beam, Signal::SIGCONT);
    }
}

/// Writes [`THAW_FILE`] whole (a rename), so the BEAM never reads half of
/// it. Written on every thaw, frozen or not: the BEAM waits for it even
/// when init could not stop it.
fn hand_over(fresh: &[u8]) {
    let partial = format!("{THAW_FILE}.partial");
    let written = std::fs::write(&partial, fresh).and_then(|()| std::fs::rename(&partial, THAW_FILE));
    if let Err(e) = written {
        log!("warning: writing {THAW_FILE}: {e}; the BEAM stays paused");
    }
}

fn restored() {
    // A tick first: the kernel takes in the time the state spent on disk
    // at its next timer interrupt, and init's own clock reads wait for it.
    std::thread::sleep(Duration::from_millis(20));
    let fresh = match reseed() {
        Ok(fresh) => fresh,
        Err(e) => {
            log!("warning: reseeding the random pool after the restore: {e}");
            Vec::new()
        }
    };
    thaw_with(&fresh);
    log::milestone(unibeam_spec::RESTORED_MARKER, " (random pool reseeded)");
    log::milestone(unibeam_spec::milestone::APPS_STARTED, " (restored)");
}

/// `RNDADDENTROPY`: `_IOW('R', 0x03, int[2])`. linux/random.h's ioctls
/// are not in libc, and nix's ioctl macros need a feature for two
/// numbers.
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
/// `RNDRESEEDCRNG`: `_IO('R', 0x07)`, since Linux 4.17.
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;

/// Mixes fresh bytes from the host (virtio-rng, /dev/hwrng, which reads
/// the host's /dev/urandom) into the input pool, credited, and makes the
/// kernel reseed its generator from it now rather than within a minute.
/// Returns more fresh host bytes, for the BEAM's own generator.
fn reseed() -> std::io::Result<Vec<u8>> {
    let mut fresh = [0u8; RESEED_BYTES];
    File::open("/dev/hwrng")?.read_exact(&mut fresh)?;
    // struct rand_pool_info { int entropy_count; int buf_size; u32 buf[]; }
    let mut info = Vec::with_capacity(8 + RESEED_BYTES);
    info.extend_from_slice(&((RESEED_BYTES * 8) as i32).to_ne_bytes());
    info.extend_from_slice(&(RESEED_BYTES as i32).to_ne_bytes());
    info.extend_from_slice(&fresh);
    let random = OpenOptions::new().write(true).open("/dev/urandom")?;
    // SAFETY: `info` is a rand_pool_info whose buf_size matches the bytes
    // that follow it; the kernel only reads it.
    if unsafe { libc::ioctl(random.as_raw_fd(), RNDADDENTROPY, info.as_ptr()) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: RNDRESEEDCRNG takes no argument.
    if unsafe { libc::ioctl(random.as_raw_fd(), RNDRESEEDCRNG) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // The generator was just reseeded from the host's bytes: its output
    // is fresh, and unlike a second read of /dev/hwrng it never waits.
    let mut for_beam = vec![0u8; RESEED_BYTES];
    File::open("/dev/urandom")?.read_exact(&mut for_beam)?;
    Ok(for_beam)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_snapshot_keys_are_taken() {
        assert!(!on_key(116), "KEY_POWER is the stop's");
        assert_eq!(wait(), None, "nothing frozen");
    }

    #[test]
    fn only_time_the_guest_ran_counts_toward_the_limit() {
        let start = Instant::now();
        let mut f = Frozen {
            beam: Pid::from_raw(1),
            ran: Duration::ZERO,
            seen: start,
        };
        // A restore ten minutes later: the clock jumps, nothing counts.
        let restored = start + Duration::from_secs(600);
        f = f.tick(restored);
        assert_eq!(
            f.left(),
            FREEZE_LIMIT,
            "the time on disk is not the host's silence"
        );
        // Then the guest runs with no word: one slice at a time.
        for i in 1..=60 {
            f = f.tick(restored + SLICE * i);
        }
        assert!(f.left().is_zero(), "{f:?}");
    }

    #[test]
    fn the_ioctl_numbers_are_linuxs() {
        // _IOC(dir, type, nr, size) = dir << 30 | size << 16 | type << 8 | nr
        let iow = |ty: u8, nr: u8, size: libc::c_ulong| {
            (1 << 30) | (size << 16) | (libc::c_ulong::from(ty) << 8) | libc::c_ulong::from(nr)
        };
        assert_eq!(RNDADDENTROPY, iow(b'R', 0x03, 8));
        assert_eq!(RNDRESEEDCRNG, (libc::c_ulong::from(b'R') << 8) | 0x07);
    }
}
