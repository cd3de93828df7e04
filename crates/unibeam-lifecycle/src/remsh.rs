//! `remsh`: an interactive shell on an instance's node, run by the host's
//! own `erl` (or `iex`), as `bin/app remote` runs one.
//!
//! No EPMD is involved on either side, and nothing needs root. The host
//! node is hidden, with a unique name of the same kind as the guest's
//! (`-sname` for a short name, `-name` for a long one). It finds the guest
//! through a small EPMD module of its own, compiled here with `erlc`:
//! whatever the guest node's host part says (`rpct`, `10.77.0.2`), the
//! node is at 127.0.0.1 on the instance's forwarded distribution port.
//! The host node's own listener takes an ephemeral port on 127.0.0.1.
//! (`-erl_epmd_port` with a hosts entry in an `ERL_INETRC` file would do
//! for short names, but a long name's host part is an address, which no
//! hosts file redirects.)
//!
//! The cookie reaches `erl` only as `.erlang.cookie` (0400) in a private
//! temporary `HOME`, never on its command line or in its environment.
//! The directory goes when the [`Remsh`] is dropped. `ERL_FLAGS` and the
//! like are left out of the shell's environment: a `-setcookie` there
//! would override the instance's cookie.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;
use thiserror::Error;
use unibeam_image::manifest::{ImageManifest, ManifestError};
use unibeam_spec::hostfs::{self, PathIo};
use unibeam_spec::Flavor;
use unibeam_vmm::state::{InstanceName, StateError, Store};

use crate::remote::{self, RemoteError};

/// The module name of the host node's EPMD stand-in.
const EPMD_MODULE: &str = "unibeam_remsh_epmd";

#[derive(Debug, Error)]
pub enum RemshError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("reading the instance's image to tell Erlang from Elixir (--elixir or --erlang says which)")]
    Manifest(#[source] ManifestError),
    #[error(
        "this host has no `{program}` on its PATH, which remsh runs; install it: apt-get install {package}"
    )]
    NoProgram {
        program: &'static str,
        package: &'static str,
    },
    #[error("preparing the shell's private directory")]
    Scratch(#[source] io::Error),
    #[error("writing the shell's files")]
    Write(#[source] PathIo),
    #[error("running erlc")]
    Erlc(#[source] io::Error),
    #[error("erlc failed on the shell's EPMD module: {0}")]
    ErlcFailed(String),
    #[error("holding Ctrl-C, Ctrl-\\ and hangups for the shell")]
    Signals(#[source] io::Error),
    #[error("running {program}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
}

/// Which shell to run on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shell {
    /// `erl -remsh`.
    Erlang,
    /// `iex --remsh`.
    Elixir,
}

impl Shell {
    fn program(self) -> &'static str {
        match self {
            Shell::Erlang => "erl",
            Shell::Elixir => "iex",
        }
    }

    fn package(self) -> &'static str {
        match self {
            Shell::Erlang => "erlang-base",
            Shell::Elixir => "elixir",
        }
    }

    /// How to leave the shell without stopping the node.
    pub fn how_to_leave(self) -> &'static str {
        match self {
            Shell::Erlang => "Ctrl-G, then q and Enter (or Ctrl-C, then a and Enter)",
            Shell::Elixir => "Ctrl-\\ (or Ctrl-G, then q and Enter)",
        }
    }

    /// What would stop the guest node, not just the shell.
    pub fn what_stops_the_node(self) -> &'static str {
        match self {
            Shell::Erlang => "q(), init:stop() and halt()",
            Shell::Elixir => "System.stop(), System.halt() and :init.stop()",
        }
    }
}

/// A shell ready to run: its command, and the private directory it
/// reads (removed on drop, so keep this until the command has exited).
#[derive(Debug)]
pub struct Remsh {
    /// The node the shell opens on.
    pub node: String,
    pub shell: Shell,
    /// `erl`/`iex` with its arguments, `HOME` set to `home`.
    pub command: Command,
    home: TempDir,
}

impl Remsh {
    /// The private directory (`HOME` of the command).
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// Runs the shell on the caller's terminal and waits for it. Ctrl-C
    /// and Ctrl-\\ reach the shell's whole process group, and a closed
    /// terminal hangs it up: here they are held, and the shell decides.
    /// A SIGTERM is passed on to the shell. Either way this returns when
    /// the shell has exited, and dropping `self` removes the private
    /// directory.
    pub fn run(mut self) -> Result<ExitStatus, RemshError> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
        let held = Arc::new(AtomicBool::new(false));
        let term = Arc::new(AtomicBool::new(false));
        let mut ids = Vec::new();
        let mut hold = |signal, flag: &Arc<AtomicBool>| {
            signal_hook::flag::register(signal, Arc::clone(flag))
                .map(|id| ids.push(id))
                .map_err(RemshError::Signals)
        };
        let held_and_waited = [SIGINT, SIGQUIT, SIGHUP]
            .into_iter()
            .try_for_each(|signal| hold(signal, &held))
            .and_then(|()| hold(SIGTERM, &term))
            .and_then(|()| self.wait(&term));
        for id in ids {
            signal_hook::low_level::unregister(id);
        }
        held_and_waited
    }

    fn wait(&mut self, term: &AtomicBool) -> Result<ExitStatus, RemshError> {
        let spawn = |source| RemshError::Spawn {
            program: self.shell.program().to_string(),
            source,
        };
        let mut child = self.command.spawn().map_err(spawn)?;
        loop {
            if let Some(status) = child.try_wait().map_err(spawn)? {
                return Ok(status);
            }
            if term.swap(false, Ordering::SeqCst) {
                let pid = nix::unistd::Pid::from_raw(child.id() as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// What the caller asks for; `shell: None` takes it from the image.
#[derive(Debug, Clone, Copy, Default)]
pub struct RemshOptions {
    pub shell: Option<Shell>,
}

/// Prepares a shell on `name`'s node: checks the instance runs and has
/// distribution, finds `erl`/`iex`, writes the cookie and the EPMD module
/// into a private directory, and builds the command.
pub fn prepare(store: &Store, name: &InstanceName, options: RemshOptions) -> Result<Remsh, RemshError> {
    let (dist, target) = remote::target(store, name)?;
    let shell = match options.shell {
        Some(shell) => shell,
        None => image_shell(&store.load(name)?.image)?,
    };
    let path = std::env::var_os("PATH").unwrap_or_default();
    let program = hostfs::find_program(&path, shell.program()).ok_or(RemshError::NoProgram {
        program: shell.program(),
        package: shell.package(),
    })?;
    let erlc = hostfs::find_program(&path, "erlc").ok_or(RemshError::NoProgram {
        program: "erlc",
        package: "erlang-base",
    })?;
    let home = tempfile::Builder::new()
        .prefix("unibeam-remsh-")
        .tempdir_in(scratch_parent())
        .map_err(RemshError::Scratch)?;
    write_cookie(home.path(), &target.cookie)?;
    compile_epmd_module(&erlc, home.path(), &dist.node, dist.port)?;
    let own = own_name(home.path(), &dist.node);
    let mut command = Command::new(program);
    command
        .args(shell_args(shell, &own, &dist.node, &ebin(home.path())))
        .env("HOME", home.path())
        .env_remove("ERL_FLAGS")
        .env_remove("ERL_AFLAGS")
        .env_remove("ERL_ZFLAGS")
        .env_remove("ELIXIR_ERL_OPTIONS");
    if let Some(tls) = &target.tls {
        // TLS distribution: the host erl speaks inet_tls with unibeam's client certificate.
        let elixir = matches!(shell, Shell::Elixir);
        command.args(crate::dist_tls::remsh_args(elixir, home.path(), tls).map_err(RemshError::Write)?);
    }
    Ok(Remsh {
        node: dist.node,
        shell,
        command,
        home,
    })
}

/// Where the private directory goes: the temporary directory, or /tmp
/// when its path has a space (`iex --erl` splits its string at spaces).
fn scratch_parent() -> PathBuf {
    let dir = std::env::temp_dir();
    if dir.to_string_lossy().chars().any(char::is_whitespace) {
        PathBuf::from("/tmp")
    } else {
        dir
    }
}

/// Elixir for a `mix release`, Erlang otherwise.
fn image_shell(image: &Path) -> Result<Shell, RemshError> {
    let manifest = ImageManifest::read(image).map_err(RemshError::Manifest)?;
    Ok(match manifest.boot.release.flavor {
        Flavor::Mix { .. } => Shell::Elixir,
        Flavor::Relx => Shell::Erlang,
    })
}

fn write_cookie(home: &Path, cookie: &str) -> Result<(), RemshError> {
    let path = home.join(".erlang.cookie");
    hostfs::write_atomic_mode(&path, cookie.as_bytes(), 0o400).map_err(RemshError::Write)
}

fn ebin(home: &Path) -> PathBuf {
    home.join("ebin")
}

/// Writes and compiles the EPMD module into `home`'s `ebin/`.
fn compile_epmd_module(erlc: &Path, home: &Path, node: &str, port: u16) -> Result<(), RemshError> {
    let ebin = ebin(home);
    let source = home.join(format!("{EPMD_MODULE}.erl"));
    std::fs::create_dir(&ebin)
        .and_then(|()| std::fs::write(&source, epmd_module(node, port)))
        .map_err(hostfs::at::<PathIo>(&source))
        .map_err(RemshError::Write)?;
    let out = Command::new(erlc)
        .arg("-o")
        .arg(&ebin)
        .arg(&source)
        .env("HOME", home)
        .output()
        .map_err(RemshError::Erlc)?;
    if !out.status.success() {
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        return Err(RemshError::ErlcFailed(said.trim().replace('\n', "; ")));
    }
    Ok(())
}

/// An EPMD module (OTP 21 and later) that knows one node: `node` is at
/// 127.0.0.1:`port`. The host node registers nowhere and listens on an
/// ephemeral port; any other node is unknown to it.
fn epmd_module(node: &str, port: u16) -> String {
    let (name, host) = node.split_once('@').unwrap_or((node, ""));
    // As lists of character codes: no quoting to get wrong.
    let codes = |s: &str| {
        let list: Vec<String> = s.chars().map(|c| (c as u32).to_string()).collect();
        format!("[{}]", list.join(","))
    };
    let (name, host) = (codes(name), codes(host));
    format!(
        "%% Written by unibeam remsh: the node {node:?} is at 127.0.0.1:{port}.
-module({EPMD_MODULE}).
-export([start_link/0, register_node/2, register_node/3, port_please/2, port_please/3,
         listen_port_please/2, address_please/3, names/1]).

start_link() -> ignore.
register_node(Name, Port) -> register_node(Name, Port, inet).
register_node(_Name, _Port, _Family) -> {{ok, -1}}.
listen_port_please(_Name, _Host) -> {{ok, 0}}.
port_please(Name, Host) -> port_please(Name, Host, infinity).
port_please(Name, _Host, _Timeout) ->
    case Name of
        {name} -> {{port, {port}, 6}};
        _ -> noport
    end.
address_please(Name, Host, _Family) ->
    case {{Name, Host}} of
        {{{name}, {host}}} -> {{ok, {{127,0,0,1}}, {port}, 6}};
        _ -> {{error, nxdomain}}
    end.
names(_Host) -> {{error, address}}.
"
    )
}

/// The host node's name: of the guest's kind, unique by the private
/// directory's random suffix. A long name when the guest's host part has
/// a dot (`web-1@10.77.0.2`), a short one otherwise (`hello@rpct`).
fn own_name(home: &Path, guest: &str) -> OwnName {
    let suffix: String = home
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .rsplit('-')
        .next()
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    let long = guest.split_once('@').is_some_and(|(_, host)| host.contains('.'));
    if long {
        OwnName::Long(format!("remsh-{suffix}@127.0.0.1"))
    } else {
        OwnName::Short(format!("remsh-{suffix}@localhost"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum OwnName {
    Short(String),
    Long(String),
}

/// The shell's arguments: no cookie among them, ever.
fn shell_args(shell: Shell, own: &OwnName, guest: &str, ebin: &Path) -> Vec<OsString> {
    let (name_flag, name) = match own {
        OwnName::Short(n) => ("sname", n),
        OwnName::Long(n) => ("name", n),
    };
    // The BEAM's own flags: no EPMD daemon started, the EPMD module, its
    // directory, and the host node's listener on loopback only.
    let mut erl: Vec<OsString> = vec![
        "-start_epmd".into(),
        "false".into(),
        "-epmd_module".into(),
        EPMD_MODULE.into(),
        "-pa".into(),
        ebin.into(),
        "-kernel".into(),
        "inet_dist_use_interface".into(),
        "{127,0,0,1}".into(),
    ];
    match shell {
        Shell::Erlang => {
            let mut args: Vec<OsString> = vec![
                "-hidden".into(),
                format!("-{name_flag}").into(),
                name.into(),
                "-remsh".into(),
                guest.into(),
            ];
            args.append(&mut erl);
            args
        }
        Shell::Elixir => {
            // `--erl` takes one string, which the `elixir` script splits
            // at spaces; the private directory's path has none (see
            // `prepare`), nor have the other flags.
            let joined = erl
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ");
            vec![
                "--hidden".into(),
                format!("--{name_flag}").into(),
                name.into(),
                "--remsh".into(),
                guest.into(),
                "--erl".into(),
                joined.into(),
            ]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn args(shell: Shell, guest: &str) -> Vec<String> {
        let home = Path::new("/tmp/unibeam-remsh-Ab12Cd");
        shell_args(shell, &own_name(home, guest), guest, &ebin(home))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn a_short_named_guest_gets_a_short_named_hidden_shell() {
        assert_eq!(
            args(Shell::Erlang, "hello@rpct"),
            [
                "-hidden",
                "-sname",
                "remsh-Ab12Cd@localhost",
                "-remsh",
                "hello@rpct",
                "-start_epmd",
                "false",
                "-epmd_module",
                "unibeam_remsh_epmd",
                "-pa",
                "/tmp/unibeam-remsh-Ab12Cd/ebin",
                "-kernel",
                "inet_dist_use_interface",
                "{127,0,0,1}",
            ]
        );
    }

    #[test]
    fn a_long_named_guest_gets_a_long_named_hidden_shell() {
        let a = args(Shell::Erlang, "web-1@10.77.0.2");
        assert_eq!(
            a[..5],
            [
                "-hidden",
                "-name",
                "remsh-Ab12Cd@127.0.0.1",
                "-remsh",
                "web-1@10.77.0.2"
            ]
        );
    }

    #[test]
    fn iex_takes_the_same_beam_flags_in_one_erl_string() {
        let a = args(Shell::Elixir, "hello_elixir@rpct");
        assert_eq!(
            a,
            [
                "--hidden",
                "--sname",
                "remsh-Ab12Cd@localhost",
                "--remsh",
                "hello_elixir@rpct",
                "--erl",
                "-start_epmd false -epmd_module unibeam_remsh_epmd -pa /tmp/unibeam-remsh-Ab12Cd/ebin \
                 -kernel inet_dist_use_interface {127,0,0,1}",
            ]
        );
        let long = args(Shell::Elixir, "web-1@10.77.0.2");
        assert_eq!(long[1..3], ["--name", "remsh-Ab12Cd@127.0.0.1"]);
    }

    #[test]
    fn the_epmd_module_knows_only_the_guest() {
        let module = epmd_module("web-1@10.77.0.2", 41234);
        assert!(module.starts_with("%% Written by unibeam remsh"));
        assert!(module.contains("-module(unibeam_remsh_epmd)."));
        // "web-1" and "10.77.0.2" as character codes.
        assert!(module
            .contains("{[119,101,98,45,49], [49,48,46,55,55,46,48,46,50]} -> {ok, {127,0,0,1}, 41234, 6};"));
        assert!(module.contains("[119,101,98,45,49] -> {port, 41234, 6};"));
        assert!(module.contains("listen_port_please(_Name, _Host) -> {ok, 0}."));
    }

    /// The module compiles with the host's erlc (when it has one).
    #[test]
    fn the_epmd_module_compiles() {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let Some(erlc) = hostfs::find_program(&path, "erlc") else {
            eprintln!("no erlc on this host: not compiled");
            return;
        };
        let home = tempfile::tempdir().unwrap();
        compile_epmd_module(&erlc, home.path(), "web-1@10.77.0.2", 41234).unwrap();
        assert!(ebin(home.path()).join("unibeam_remsh_epmd.beam").is_file());
    }

    #[test]
    fn the_cookie_is_only_in_the_private_home_and_read_only() {
        let home = tempfile::tempdir().unwrap();
        write_cookie(home.path(), "SECRETCOOKIE").unwrap();
        let path = home.path().join(".erlang.cookie");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "SECRETCOOKIE");
        assert_eq!(path.metadata().unwrap().permissions().mode() & 0o777, 0o400);
        for shell in [Shell::Erlang, Shell::Elixir] {
            for guest in ["hello@rpct", "web-1@10.77.0.2"] {
                let own = own_name(home.path(), guest);
                let a = shell_args(shell, &own, guest, &ebin(home.path()));
                assert!(a.iter().all(|a| !a.to_string_lossy().contains("SECRETCOOKIE")));
                assert!(a.iter().all(|a| !a.to_string_lossy().contains("setcookie")));
            }
        }
    }

    #[test]
    fn a_missing_program_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let erl = dir.path().join("erl");
        std::fs::write(&erl, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&erl, std::fs::Permissions::from_mode(0o644)).unwrap();
        let path = dir.path().as_os_str();
        assert_eq!(hostfs::find_program(path, "erl"), None, "not executable");
        std::fs::set_permissions(&erl, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(hostfs::find_program(path, "erl"), Some(erl));
        assert_eq!(hostfs::find_program(path, "iex"), None);
    }

    #[test]
    fn a_missing_erl_names_the_package() {
        let e = RemshError::NoProgram {
            program: "erl",
            package: "erlang-base",
        };
        assert_eq!(
            e.to_string(),
            "this host has no `erl` on its PATH, which remsh runs; install it: apt-get install erlang-base"
        );
    }
}
