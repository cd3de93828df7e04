//! Process identities that survive pid reuse and host reboots, so a
//! record never calls a dead instance alive.

use serde::{Deserialize, Serialize};
use std::fs;

/// The host's boot (/proc/sys/kernel/random/boot_id). Pids and start times
/// count from boot, so after a reboot (or a host crash) a recorded pid and
/// start time may well belong to some other process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootId(u128);

impl BootId {
    pub fn parse(text: &str) -> Option<BootId> {
        let hex: String = text.trim().chars().filter(|c| *c != '-').collect();
        if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        u128::from_str_radix(&hex, 16).ok().map(BootId)
    }

    /// This host's current boot, read once per process.
    pub fn current() -> Option<BootId> {
        static CURRENT: std::sync::OnceLock<Option<BootId>> = std::sync::OnceLock::new();
        *CURRENT.get_or_init(|| BootId::parse(&fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?))
    }
}

impl Serialize for BootId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{:032x}", self.0))
    }
}

impl<'de> Deserialize<'de> for BootId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<BootId, D::Error> {
        let text = String::deserialize(d)?;
        BootId::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("bad boot id {text:?}")))
    }
}

/// A process identity that survives pid reuse and host reboots: pid, its
/// start time in clock ticks since boot (field 22 of /proc/<pid>/stat),
/// and the boot it ran in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessId {
    pub pid: u32,
    pub start_ticks: u64,
    /// Absent in records written before boot ids were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<BootId>,
}

impl ProcessId {
    pub fn of(pid: u32) -> Option<ProcessId> {
        Some(ProcessId {
            pid,
            start_ticks: start_ticks(pid)?,
            boot: BootId::current(),
        })
    }

    /// Still the same process: same boot, and not a newer process that
    /// reused the pid.
    pub fn alive(&self) -> bool {
        if let (Some(then), Some(now)) = (self.boot, BootId::current()) {
            if then != now {
                return false;
            }
        }
        start_ticks(self.pid) == Some(self.start_ticks)
    }
}

fn start_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; fields follow the last ')'.
    let after = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let state = fields.first()?;
    if *state == "Z" || *state == "X" {
        return None;
    }
    fields.get(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_process_is_alive_and_a_stale_identity_is_not() {
        let me = ProcessId::of(std::process::id()).unwrap();
        assert!(me.alive());
        let reused = ProcessId {
            start_ticks: me.start_ticks + 1,
            ..me
        };
        assert!(!reused.alive(), "same pid, other start time: not our process");
        let legacy = ProcessId { boot: None, ..me };
        assert!(legacy.alive(), "records without a boot id still count");
    }

    #[test]
    fn a_process_of_an_earlier_host_boot_is_not_alive() {
        let me = ProcessId::of(std::process::id()).unwrap();
        assert!(me.boot.is_some(), "this host has a boot id");
        let earlier = ProcessId {
            boot: BootId::parse("00000000-0000-4000-8000-000000000001"),
            ..me
        };
        assert!(!earlier.alive(), "same pid and start time, but another boot");
        let json = serde_json::to_string(&me).unwrap();
        assert_eq!(serde_json::from_str::<ProcessId>(&json).unwrap(), me);
    }
}
