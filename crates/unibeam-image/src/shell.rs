//! Decides, from the release itself, whether its image needs `/bin/sh`
//! and which host programs the release runs.
//!
//! The BEAM runs `open_port({spawn, Cmd}, ...)` through `/bin/sh -c`
//! (erl_child_setup execs it by that hard-coded path) and `os:cmd/1,2`
//! through `/bin/sh -s`; os_mon's memsup and cpu_sup ports are started that
//! way and disksup runs `/bin/df -lk` through the shell, and os_mon's death
//! takes the node down. Elixir's `System.shell/1,2` needs the shell too;
//! `System.cmd/2,3` only the program it names.
//!
//! The signs are read from each `.beam` file's import, atom and literal
//! tables (see [`beam::tables`]). OTP's and Elixir's own applications
//! ([`PLATFORM_APPS`]) are not scanned: their modules *implement* ports,
//! `os:cmd` and `System.cmd` (kernel's `os`, `user_drv`,
//! `inet_gethost_native`, `heart`, stdlib's `peer`, Elixir's `System`), or
//! are tools a service does not run (`dialyzer`, `yecc`, `observer`,
//! `common_test`), and scanning them would give every release a shell:
//! hello, an inets release, trips the raw rule ten times, all in kernel,
//! stdlib and inets (`mod_cgi`, which only runs CGI scripts a config names).
//! The one platform application that shells out as soon as it starts,
//! os_mon, is a sign by its presence (`lib/os_mon-*`).

use crate::beam::{self, BeamError};
use crate::content::PLATFORM_APPS;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ShellError {
    #[error("{path}: cannot read")]
    Unreadable {
        path: PathBuf,
        #[source]
        cause: std::io::Error,
    },
    #[error("{path}: cannot read its tables")]
    Beam {
        path: PathBuf,
        #[source]
        cause: BeamError,
    },
}

/// Whether the image gets a POSIX shell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShellMode {
    /// When the release needs one (see [`scan`]).
    #[default]
    Auto,
    Always,
    Never,
}

impl ShellMode {
    pub fn label(self) -> &'static str {
        match self {
            ShellMode::Auto => "auto",
            ShellMode::Always => "always",
            ShellMode::Never => "never",
        }
    }
}

/// What the release needs of a shell, and why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShellNeed {
    /// Why it needs `/bin/sh`, e.g. `stock_web calls os:cmd/1`; empty when
    /// it does not.
    pub reasons: Vec<String>,
    /// What fails without the shell, one per reason.
    pub failures: Vec<String>,
    /// Host programs (names in `/usr/bin`) the release runs.
    pub programs: BTreeSet<String>,
}

impl ShellNeed {
    pub fn needed(&self) -> bool {
        !self.reasons.is_empty()
    }

    /// The warning for `--shell never` on a release that needs a shell.
    pub fn never_warning(&self) -> Option<String> {
        self.needed()
            .then(|| format!("--shell never: {}", self.failures.join("; ")))
    }

    fn add(&mut self, reason: String, failure: String) {
        self.reasons.push(reason);
        self.failures.push(failure);
    }
}

/// Where the host's programs are looked up, in order.
pub struct Host {
    pub bin_dirs: Vec<PathBuf>,
}

impl Host {
    pub fn system() -> Host {
        Host {
            bin_dirs: vec!["/usr/bin".into(), "/bin".into()],
        }
    }

    /// The host file for a command's first word, if it is a program the
    /// guest can run: an ELF file or a `#!/bin/sh` script. Shell builtins
    /// and the shell itself are left out: the shell provides them.
    pub fn program(&self, word: &str) -> Option<(String, PathBuf)> {
        let name = word
            .strip_prefix("/usr/bin/")
            .or_else(|| word.strip_prefix("/bin/"))
            .unwrap_or(word);
        let plain = |c: char| c.is_ascii_alphanumeric() || "._+-".contains(c);
        if name.is_empty() || !name.chars().all(plain) || name.starts_with(['.', '-']) {
            return None;
        }
        if SHELL_BUILTINS.contains(&name) || ["sh", "dash"].contains(&name) {
            return None;
        }
        let path = self.bin_dirs.iter().map(|d| d.join(name)).find(|p| p.is_file())?;
        let real = fs::canonicalize(&path).ok()?;
        let head = fs::read(&real).ok()?;
        let runnable = head.starts_with(b"\x7fELF") || head.starts_with(b"#!/bin/sh");
        runnable.then(|| (name.to_string(), real))
    }
}

/// dash's special and regular builtins: a command starting with one runs
/// without a program, even where /usr/bin has a program of that name.
const SHELL_BUILTINS: &[&str] = &[
    "[", "alias", "bg", "break", "cd", "command", "continue", "echo", "eval", "exec", "exit", "export",
    "false", "fg", "getopts", "hash", "jobs", "kill", "local", "printf", "pwd", "read", "readonly", "return",
    "set", "shift", "test", "times", "trap", "true", "type", "ulimit", "umask", "unalias", "unset", "wait",
];

/// Scans the release at `root` (its `lib/*/ebin/*.beam`).
pub fn scan(root: &Path, host: &Host) -> Result<ShellNeed, ShellError> {
    let mut need = ShellNeed::default();
    for app_dir in sorted_entries(&root.join("lib"))? {
        let app_vsn = app_dir.file_name().unwrap_or_default().to_string_lossy();
        let app = app_vsn.rsplit_once('-').map_or(&*app_vsn, |(name, _)| name);
        if app == "os_mon" {
            need.add(
                "os_mon (memsup, cpu_sup, disksup)".into(),
                "os_mon's memsup/cpu_sup/disksup ports will die and stop the node".into(),
            );
            need.programs.insert("df".into());
        }
        if PLATFORM_APPS.contains(&app) {
            continue;
        }
        let ebin = app_dir.join("ebin");
        for file in sorted_entries(&ebin)? {
            if file.extension().is_some_and(|e| e == "beam") {
                scan_module(&file, host, &mut need)?;
            }
        }
    }
    Ok(need)
}

/// A directory's entries, sorted so reasons come out in a stable order;
/// nothing when it does not exist.
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, ShellError> {
    let unreadable = |cause| ShellError::Unreadable {
        path: dir.to_path_buf(),
        cause,
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut paths = entries
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(unreadable)?;
    paths.sort();
    Ok(paths)
}

fn scan_module(path: &Path, host: &Host, need: &mut ShellNeed) -> Result<(), ShellError> {
    let data = fs::read(path).map_err(|cause| ShellError::Unreadable {
        path: path.to_path_buf(),
        cause,
    })?;
    let beam_err = |cause| ShellError::Beam {
        path: path.to_path_buf(),
        cause,
    };
    let tables = beam::tables(&beam::decompress(&data).map_err(beam_err)?).map_err(beam_err)?;
    let literals: Vec<Terms> = tables.literals.iter().map(|l| etf_terms(l)).collect();
    let calls = calls(&tables, &literals);
    let module = tables
        .atoms
        .first()
        .map_or("?", |m| m.trim_start_matches("Elixir."));
    for call in calls.iter().filter(|c| c.needs_shell) {
        let function = &call.function;
        need.add(
            format!("{module} calls {function}"),
            format!("{function} in {module} will fail"),
        );
    }
    if !calls.is_empty() {
        for text in literals.iter().flat_map(|l| &l.strings) {
            let word = text.split_whitespace().next().unwrap_or("");
            if let Some((name, _)) = host.program(word) {
                need.programs.insert(name);
            }
        }
    }
    Ok(())
}

/// A call of a module that runs other programs.
struct Call {
    /// `os:cmd/1`, `open_port({spawn, ...})`.
    function: String,
    /// `System.cmd` needs only the program.
    needs_shell: bool,
}

/// What a module calls that runs other programs. `open_port/2` counts
/// when the atom `spawn` is in the atom table (the tuple is built at run
/// time) or in a literal (`{spawn, "uname"}` is one constant).
fn calls(tables: &beam::Tables, literals: &[Terms]) -> Vec<Call> {
    let spawn = |a: &String| a == "spawn";
    let spawns = tables.atoms.iter().any(spawn) || literals.iter().any(|l| l.atoms.iter().any(spawn));
    let call = |function: String, needs_shell| Call {
        function,
        needs_shell,
    };
    let mut calls = Vec::new();
    for (m, f, a) in &tables.imports {
        calls.push(match (m.as_str(), f.as_str(), a) {
            ("os", "cmd", 1 | 2) => call(format!("os:cmd/{a}"), true),
            ("erlang", "open_port", 2) if spawns => call("open_port({spawn, ...})".into(), true),
            ("Elixir.System", "shell", 1 | 2) => call(format!("System.shell/{a}"), true),
            ("Elixir.System", "cmd", 2 | 3) => call(format!("System.cmd/{a}"), false),
            _ => continue,
        });
    }
    calls
}

/// The strings and atoms in a literal, at any depth.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Terms {
    /// Charlists (`STRING_EXT`, or lists of character codes) and UTF-8
    /// binaries.
    pub strings: Vec<String>,
    pub atoms: Vec<String>,
}

/// Reads the strings and atoms of one literal (see [`Terms`]).
///
/// Our own reader of the external term format rather than the `eetf`
/// crate: only strings matter here, eetf brings num-bigint, ordered-float
/// and libflate along, and it rejects a whole literal it cannot decode
/// where this keeps the strings read before the unknown term.
pub fn etf_terms(literal: &[u8]) -> Terms {
    let mut reader = Etf {
        data: literal,
        at: 1,
        out: Terms::default(),
    };
    if literal.first() == Some(&131) {
        reader.term(0);
    }
    reader.out
}

struct Etf<'a> {
    data: &'a [u8],
    at: usize,
    out: Terms,
}

/// Literals nest deeper only in pathological code; stop there.
const MAX_DEPTH: usize = 64;

impl Etf<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let bytes = self.data.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(bytes)
    }

    fn uint(&mut self, n: usize) -> Option<usize> {
        Some(self.take(n)?.iter().fold(0, |acc, b| (acc << 8) | *b as usize))
    }

    /// Skips one term, collecting its strings; `None` at anything unknown.
    fn term(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.uint(1)? {
            97 => self.skip(1),                                                       // small integer
            98 => self.skip(4),                                                       // integer
            70 => self.skip(8),                                                       // float
            100 | 118 => self.atom(2),                                                // atom
            115 | 119 => self.atom(1),                                                // small atom
            110 => self.big(1),                                                       // small bignum
            111 => self.big(4),                                                       // large bignum
            106 => Some(()),                                                          // []
            104 => self.terms(1, 1, depth),                                           // small tuple
            105 => self.terms(4, 1, depth),                                           // large tuple
            116 => self.terms(4, 2, depth),                                           // map
            77 => self.skip(1).and_then(|_| self.uint(4)).and_then(|n| self.skip(n)), // bits
            107 => self.string(2),                                                    // charlist of bytes
            109 => self.string(4),                                                    // binary
            108 => self.list(depth),
            _ => None,
        }
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(drop)
    }

    fn sized(&mut self, len_bytes: usize) -> Option<&[u8]> {
        let n = self.uint(len_bytes)?;
        self.take(n)
    }

    fn big(&mut self, len_bytes: usize) -> Option<()> {
        let n = self.uint(len_bytes)?;
        self.skip(1 + n)
    }

    fn terms(&mut self, len_bytes: usize, per: usize, depth: usize) -> Option<()> {
        let n = self.uint(len_bytes)?;
        (0..n * per).try_for_each(|_| self.term(depth + 1))
    }

    fn string(&mut self, len_bytes: usize) -> Option<()> {
        let text = std::str::from_utf8(self.sized(len_bytes)?).map(str::to_string);
        self.out.strings.extend(text);
        Some(())
    }

    /// Latin-1 atoms (tags 100, 115) are read as UTF-8: the names that
    /// matter here are ASCII.
    fn atom(&mut self, len_bytes: usize) -> Option<()> {
        let name = String::from_utf8_lossy(self.sized(len_bytes)?).into_owned();
        self.out.atoms.push(name);
        Some(())
    }

    /// A proper list of character codes is a string; anything else is
    /// walked for the strings inside it.
    fn list(&mut self, depth: usize) -> Option<()> {
        let n = self.uint(4)?;
        let mut text = String::new();
        let mut chars = true;
        for _ in 0..n {
            let before = self.at;
            self.term(depth + 1)?;
            let code = match self.data[before] {
                97 => Some(self.data[before + 1] as u32),
                98 => Some(u32::from_be_bytes(
                    self.data[before + 1..before + 5].try_into().ok()?,
                )),
                _ => None,
            };
            match code.and_then(char::from_u32) {
                Some(c) if chars => text.push(c),
                _ => chars = false,
            }
        }
        let proper = self.data.get(self.at) == Some(&106);
        self.term(depth + 1)?;
        if chars && proper {
            self.out.strings.push(text);
        }
        Some(())
    }
}

#[cfg(test)]
#[path = "shell_tests.rs"]
mod tests;
