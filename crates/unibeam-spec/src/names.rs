//! Names users give that end up somewhere strict: an Erlang node name
//! (the BEAM's `-name`/`-sname`) and a Linux network interface name. One
//! check each, shared by `run`, `up` and `export`, so every verb refuses
//! the same things.

/// Linux's interface names hold at most 15 bytes (IFNAMSIZ less the NUL).
pub const IFNAME_MAX: usize = 15;

/// What is wrong with `node` as the BEAM's node name (`-name`/`-sname`):
/// NAME of letters, digits, '_' and '-', then optionally `@HOST`, a host
/// name or IPv4 address; at most 255 bytes, an atom's limit. `None`: it
/// is fine.
pub fn node_name_problem(node: &str) -> Option<String> {
    let (name, host) = match node.split_once('@') {
        Some((name, host)) => (name, Some(host)),
        None => (node, None),
    };
    let name_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let host_char = |c: char| c.is_ascii_alphanumeric() || "_-.".contains(c);
    if node.len() > 255 {
        Some(format!("{} bytes, the BEAM takes at most 255", node.len()))
    } else if name.is_empty() {
        Some("the name before '@' is empty".into())
    } else if let Some(c) = name.chars().find(|c| !name_char(*c)) {
        Some(format!("{c:?} in the name; use letters, digits, '_' and '-'"))
    } else if host.is_some_and(str::is_empty) {
        Some("the host after '@' is empty".into())
    } else {
        host.and_then(|h| h.chars().find(|c| !host_char(*c)))
            .map(|c| format!("{c:?} in the host; use a host name or an IPv4 address"))
    }
}

/// What is wrong with `name` as a Linux interface name (a tap, a bridge):
/// 1 to 15 bytes, none of them '/', ':', whitespace or a control
/// character, and not `.` or `..` (the kernel's own rules, so also safe in
/// a shell script). `None`: it is fine.
pub fn interface_name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > IFNAME_MAX {
        return Some(format!(
            "{} bytes; an interface name holds 1 to {IFNAME_MAX}",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Some("not an interface name".into());
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
    name.chars()
        .find(|c| !allowed(*c))
        .map(|c| format!("{c:?} in it; use letters, digits, '-', '_' and '.'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_checked_as_the_beam_would() {
        for good in ["web", "web-1@10.77.0.2", "a_b@host.example", "x@localhost"] {
            assert_eq!(node_name_problem(good), None, "{good}");
        }
        for (bad, why) in [
            ("bad name", "' ' in the name"),
            ("web@", "host after '@' is empty"),
            ("@", "name before '@' is empty"),
            ("web@ho st", "' ' in the host"),
        ] {
            assert!(node_name_problem(bad).unwrap().contains(why), "{bad}");
        }
        assert!(node_name_problem(&"a".repeat(256)).unwrap().contains("255"));
    }

    #[test]
    fn interface_names_follow_the_kernel() {
        for good in ["tap0", "ubt0123456789ab", "fc-tap.1"] {
            assert_eq!(interface_name_problem(good), None, "{good}");
        }
        for bad in [
            "",
            "..",
            "a/b",
            "a b",
            "tap0\n",
            "$(reboot)",
            "a;b",
            "abcdefghijklmnop",
        ] {
            assert!(interface_name_problem(bad).is_some(), "{bad:?}");
        }
    }
}
