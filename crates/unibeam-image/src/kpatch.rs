//! The edits `unibeam kernel build` makes to Debian's kernel source before
//! building it. Each one replaces lines that must occur exactly once, so a
//! source that differs from the one we know fails the build by name
//! instead of building something else.

use std::fs;
use std::path::{Path, PathBuf};
use thiserror::Error;
use unibeam_spec::hostfs::PathIo;

#[derive(Debug, Error)]
pub enum PatchError {
    #[error(transparent)]
    Io(#[from] PathIo),
    #[error(
        "{path}: expected exactly one `{line}`; this source is not the one unibeam's kernel build knows"
    )]
    UnknownSource { path: PathBuf, line: String },
}

/// One file's edits: each `(old, new)` pair replaces text found once.
struct SourcePatch {
    file: &'static str,
    edits: &'static [(&'static str, &'static str)],
}

/// The kernel command-line parameter that [`APIC_BUS_KHZ`] adds.
pub const APIC_BUS_KHZ_PARAM: &str = "apic_bus_khz";

const PATCHES: [SourcePatch; 2] = [ENTRY_TEXT_ALIGNMENT, APIC_BUS_KHZ];

/// x86_64's linker script pads the entry text to 2 MiB on both sides, so
/// that page-table isolation can map it into user space with huge pages.
/// Our kernel has no PTI (the fragment switches CPU_MITIGATIONS off), and
/// the padding is never freed: 3.7 MiB of a 48 MiB guest. Page alignment
/// is what the script uses on 32-bit, where PTI maps with 4 KiB pages.
const ENTRY_TEXT_ALIGNMENT: SourcePatch = SourcePatch {
    file: "arch/x86/kernel/vmlinux.lds.S",
    edits: &[
        (
            "#define ALIGN_ENTRY_TEXT_BEGIN\t. = ALIGN(PMD_SIZE);",
            "#define ALIGN_ENTRY_TEXT_BEGIN\t. = ALIGN(PAGE_SIZE);",
        ),
        (
            "#define ALIGN_ENTRY_TEXT_END\t. = ALIGN(PMD_SIZE);",
            "#define ALIGN_ENTRY_TEXT_END\t. = ALIGN(PAGE_SIZE);",
        ),
    ],
};

/// Without a TSC-deadline timer (QEMU's TCG has none) the kernel measures
/// its local APIC timer against the TSC for 100 ms, verifies the result
/// for 100 ms more, and keeps the PIT going for that, whose wiring it also
/// tests: 0.3 s of a 0.85 s boot under TCG. The VMM knows the APIC bus
/// frequency (QEMU's is 1 GHz, under TCG and KVM alike), so `unibeam run`
/// names it on the command line and the kernel takes the period as
/// platform code (Jailhouse's, VMware's) already hands it over.
const APIC_BUS_KHZ: SourcePatch = SourcePatch {
    file: "arch/x86/kernel/apic/apic.c",
    edits: &[(
        "unsigned int lapic_timer_period = 0;\n",
        "unsigned int lapic_timer_period = 0;

/* unibeam: the VMM names its APIC bus frequency; no timer calibration. */
static int __init parse_apic_bus_khz(char *arg)
{
\tunsigned int khz;
\tu64 period;

\tif (!arg || kstrtouint(arg, 0, &khz) || !khz)
\t\treturn -EINVAL;
\tperiod = (u64)khz * 1000;
\tdo_div(period, HZ);
\tlapic_timer_period = period;
\treturn 0;
}
early_param(\"apic_bus_khz\", parse_apic_bus_khz);
",
    )],
};

/// Applies every patch to the unpacked source tree at `src`.
pub fn apply(src: &Path) -> Result<(), PatchError> {
    for patch in &PATCHES {
        let path = src.join(patch.file);
        let io = |source| PathIo {
            path: path.clone(),
            source,
        };
        let text = fs::read_to_string(&path).map_err(io)?;
        let patched = edited(&text, patch.edits).map_err(|line| PatchError::UnknownSource {
            path: path.clone(),
            line: line.trim().replace('\t', " "),
        })?;
        fs::write(&path, patched).map_err(io)?;
    }
    Ok(())
}

/// `text` with every edit made, or the old text that is not there once.
fn edited(text: &str, edits: &[(&'static str, &'static str)]) -> Result<String, &'static str> {
    edits.iter().try_fold(text.to_string(), |text, (old, new)| {
        if text.matches(old).count() == 1 {
            Ok(text.replacen(old, new, 1))
        } else {
            Err(*old)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_text_padding_shrinks_to_a_page() {
        let script = "#if defined(CONFIG_X86_64)\n#define ALIGN_ENTRY_TEXT_BEGIN\t. = ALIGN(PMD_SIZE);\n\
                      #define ALIGN_ENTRY_TEXT_END\t. = ALIGN(PMD_SIZE);\n#else\n";
        let patched = edited(script, ENTRY_TEXT_ALIGNMENT.edits).unwrap();
        assert!(!patched.contains("PMD_SIZE"), "{patched}");
        assert_eq!(patched.matches("ALIGN(PAGE_SIZE)").count(), 2);
    }

    #[test]
    fn the_apic_timer_takes_its_period_from_the_command_line() {
        let source = "static int x;\nunsigned int lapic_timer_period = 0;\n\nstatic void f(void);\n";
        let patched = edited(source, APIC_BUS_KHZ.edits).unwrap();
        assert!(patched.contains(&format!("early_param(\"{APIC_BUS_KHZ_PARAM}\"")));
        assert!(patched.ends_with("\nstatic void f(void);\n"), "{patched}");
    }

    #[test]
    fn an_unknown_source_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        for patch in &PATCHES {
            let path = dir.path().join(patch.file);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, "nothing we know\n").unwrap();
        }
        let err = apply(dir.path()).unwrap_err();
        assert!(matches!(err, PatchError::UnknownSource { .. }), "{err}");
        assert!(err.to_string().contains("vmlinux.lds.S"), "{err}");
    }
}
