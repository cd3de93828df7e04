//! End-to-end, issue 18 "Stock releases run unchanged": releases made the
//! way their authors make them (`rebar3 new release`, `mix release.init`,
//! `sys.config.src`, `env.sh.eex`, several versions side by side) boot in
//! unibeam with no edits, and behave as `bin/<app> foreground` does on a host.
//!
//! Each VM boot costs seconds of TCG, so each test boots once (twice for
//! the two versions) and checks everything it can through that boot.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use unibeam_e2e::cluster::{free_port_range, Cluster};
use unibeam_e2e::*;

/// sha256("unibeam"), as `echo -n unibeam | sha256sum` prints it on the host.
const UNIBEAM_SHA256: &str = "55e9bb09d37013cfb97ac3691470d21978611c364de9cc0f8395dcce44d2029c";

/// Boots `input` (a release or image) publishing guest port 8080 (or
/// `guest_port`) with extra `run` arguments; returns the VM, the host port
/// and the first 200 body of `GET /`.
fn boot(input: &Path, guest_port: u16, extra: &[&str]) -> (Vm, u16, String) {
    let port = free_port();
    let publish = format!("{port}:{guest_port}");
    let mut args = vec![input.to_str().unwrap(), "-p", &publish];
    args.extend_from_slice(extra);
    let mut vm = Vm::run(&args);
    let (body, took) = vm.wait_http_ok(port, BOOT_TIMEOUT);
    eprintln!("{}: first HTTP 200 after {took:?}:\n{body}", input.display());
    (vm, port, body)
}

/// Ctrl-C, then a clean exit with status 0.
fn stop_cleanly(mut vm: Vm) {
    vm.interrupt();
    let status = vm.wait(Duration::from_secs(90));
    assert_eq!(status.code(), Some(0), "output:\n{}", vm.output());
}

/// `key=value` lines of a body.
fn pairs(body: &str) -> BTreeMap<String, String> {
    body.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// `GET path` that must answer 200; returns the body.
fn get_ok(port: u16, path: &str, output: &dyn Fn() -> String) -> String {
    match http_get_path(port, path) {
        Some((200, body)) => body,
        other => panic!("GET {path}: {other:?}\noutput:\n{}", output()),
    }
}

/// Copies a rebar3 or mix project's sources (not its _build) into `to`.
fn copy_project(project: &Path, entries: &[&str], to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in entries {
        let from = project.join(entry);
        if from.exists() {
            copy_tree(&from, &to.join(entry));
        }
    }
}

fn run_tool(dir: &Path, program: &str, args: &[&str]) {
    let status = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    assert!(
        status.success(),
        "{program} {} failed in {}",
        args.join(" "),
        dir.display()
    );
}

/// `unibeam build <input> -o <out> <flags>`, whatever its outcome.
fn build(input: &Path, out: &Path, flags: &[&str]) -> Output {
    let mut args = vec!["build", input.to_str().unwrap(), "-o", out.to_str().unwrap()];
    args.extend_from_slice(flags);
    unibeam_output(&args, &[])
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn stock_rebar3_release_with_os_mon_mnesia_crypto_runs_unchanged() {
    let rel = stock_release();
    let (vm, port, body) = boot(&rel, 8080, &["--memory", "256M"]);
    let output = || vm.output();

    // `-sname stock` from the template's vm.args is kept: stock@<host>.
    let rest = body
        .strip_prefix("stock on ")
        .unwrap_or_else(|| panic!("body: {body}"));
    let (host, node) = rest
        .trim_end()
        .split_once(" node ")
        .unwrap_or_else(|| panic!("body: {body}"));
    assert_eq!(node, format!("stock@{host}"), "body: {body}");

    // memsup reads the guest's memory: about the 256 MiB it was given.
    let memory = pairs(&get_ok(port, "/memory", &output));
    let total: u64 = memory
        .get("total_memory")
        .unwrap_or_else(|| panic!("no total_memory: {memory:?}"))
        .parse()
        .expect("total_memory is a number");
    let mib = total / (1024 * 1024);
    assert!((150..=300).contains(&mib), "total_memory {mib} MiB: {memory:?}");
    assert!(
        memory.contains_key("free_memory") || memory.contains_key("available_memory"),
        "{memory:?}"
    );

    // os:cmd/1 needs /bin/sh and a uname in the guest.
    assert_eq!(get_ok(port, "/uname", &output), "Linux\n");

    assert_eq!(get_ok(port, "/crypto", &output).trim(), UNIBEAM_SHA256);

    let mnesia = get_ok(port, "/mnesia", &output);
    assert!(mnesia.contains("value=stored-in-mnesia"), "mnesia: {mnesia}");
    assert!(mnesia.contains("is_running=yes"), "mnesia: {mnesia}");

    // cpu_sup and disksup run their port programs / df.
    // cpu_sup's port program reads the guest's /proc/stat.
    let cpu = get_ok(port, "/cpu", &output);
    let util: f64 = pairs(&cpu)
        .get("util")
        .and_then(|u| u.parse().ok())
        .unwrap_or_else(|| panic!("/cpu: {cpu}"));
    assert!((0.0..=100.0).contains(&util), "/cpu: {cpu}");
    // disksup runs `/bin/df -lk` through /bin/sh: the guest's /tmp (a tmpfs
    // of half the guest's memory) is among its mounts.
    let disk = get_ok(port, "/disk", &output);
    let tmp_kbytes: u64 = disk
        .lines()
        .find_map(|l| l.strip_prefix("/tmp "))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no /tmp in /disk: {disk}"));
    assert!((64 * 1024..=160 * 1024).contains(&tmp_kbytes), "/disk: {disk}");

    stop_cleanly(vm);
}

#[test]
fn srcconf_renders_sys_config_src_and_vm_args_src_from_instance_env() {
    let rel = srcconf_release();
    let (vm, _port, body) = boot(&rel, 8080, &["-e", "GREETING=hello", "-e", "LABEL=lbl"]);
    let seen = pairs(&body);
    assert_eq!(seen["greeting"], "hello", "body: {body}");
    assert_eq!(seen["color"], "blue", "${{COLOR:-blue}} with COLOR unset: {body}");
    assert_eq!(seen["label"], "lbl", "body: {body}");
    assert!(seen["node"].starts_with("srcconf@"), "body: {body}");
    stop_cleanly(vm);
}

#[test]
fn srcconf_ignores_a_stale_rendered_sys_config_beside_the_src() {
    // What `bin/srcconf foreground` leaves behind on a build host: rendered
    // sys.config and vm.args next to the .src files, with that run's values.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("srcconf");
    copy_tree(&srcconf_release(), &copy);
    let vsn = copy.join("releases/0.1.0");
    fs::write(
        vsn.join("sys.config"),
        "[{srcconf, [{greeting, \"stale\"}, {color, \"stale\"}]}].\n",
    )
    .unwrap();
    fs::write(
        vsn.join("vm.args"),
        "-sname stale\n-setcookie stale_cookie\n-srcconf_label stale\n",
    )
    .unwrap();
    let (vm, _port, body) = boot(
        &copy,
        8080,
        &["-e", "GREETING=hello", "-e", "LABEL=lbl", "-e", "COLOR=red"],
    );
    let seen = pairs(&body);
    assert_eq!(seen["greeting"], "hello", "body: {body}");
    assert_eq!(seen["color"], "red", "body: {body}");
    assert_eq!(seen["label"], "lbl", "body: {body}");
    assert!(seen["node"].starts_with("srcconf@"), "body: {body}");
    stop_cleanly(vm);
}

#[test]
fn srcconf_in_a_unibeam_toml_gets_the_service_env() {
    let home = tempfile::tempdir().unwrap();
    let base_port = free_port_range(1);
    let name = "unchanged";
    let file = home.path().join("unibeam.toml");
    let toml = format!(
        "[cluster]\nname = \"{name}\"\nsubnet = \"10.78.0.0/24\"\n\n\
         [services.web]\nrelease = \"{}\"\nreplicas = 1\n\
         ports = [\"{base_port}:8080\"]\n\
         env = {{ GREETING = \"from-toml\", LABEL = \"t\" }}\n",
        srcconf_release().display()
    );
    fs::write(&file, toml).unwrap();
    let c = Cluster {
        home,
        file,
        name: name.into(),
        replicas: 1,
        base_port,
        ticktime: 60,
    };
    c.up();
    let deadline = std::time::Instant::now() + BOOT_TIMEOUT;
    let body = loop {
        if let Some((200, body)) = http_get(c.port(1)) {
            break body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no HTTP 200 from the service:\n{}",
            String::from_utf8_lossy(&c.unibeam(&["logs", "unchanged-web-1"]).stdout)
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    eprintln!("{body}");
    let seen = pairs(&body);
    assert_eq!(seen["greeting"], "from-toml", "body: {body}");
    assert_eq!(seen["color"], "blue", "body: {body}");
    assert_eq!(seen["label"], "t", "body: {body}");
    let out = c.down();
    assert!(out.status.success(), "unibeam down: {}", stderr(&out));
}

#[test]
fn relx_replace_os_vars_renders_plain_sys_config_and_vm_args() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("hello");
    copy_tree(&hello_release(), &copy);
    let vsn = copy.join("releases/0.1.0");
    fs::write(
        vsn.join("vm.args"),
        "-sname ${NODE_BASE}\n-setcookie hello_cookie\n+K true\n",
    )
    .unwrap();
    fs::write(vsn.join("sys.config"), "[{hello, [{port, ${HELLO_PORT}}]}].\n").unwrap();
    let (vm, _port, body) = boot(
        &copy,
        8090,
        &[
            "-e",
            "RELX_REPLACE_OS_VARS=true",
            "-e",
            "NODE_BASE=replaced",
            "-e",
            "HELLO_PORT=8090",
        ],
    );
    // Answering on 8090 at all shows sys.config was rendered.
    assert!(body.contains("(node replaced@"), "body: {body}");
    stop_cleanly(vm);
}

#[test]
fn mix_env_sh_sets_node_and_variables_and_runtime_exs_reads_instance_env() {
    let (vm, _port, body) = boot(&mixenv_release(), 8080, &["-e", "MIXENV_GREETING=hey"]);
    let seen = pairs(&body);
    // RELEASE_DISTRIBUTION=name, RELEASE_NODE=mixenv@127.0.0.1 in env.sh.
    assert_eq!(seen["node"], "mixenv@127.0.0.1", "body: {body}");
    // export MIXENV_COLOR=green in env.sh reaches the BEAM's environment.
    assert_eq!(seen["color"], "green", "body: {body}");
    // config/runtime.exs read MIXENV_GREETING from the instance env.
    assert_eq!(seen["greeting"], "hey", "body: {body}");
    stop_cleanly(vm);
}

#[test]
fn erl_aflags_erl_flags_and_erl_zflags_from_instance_env_take_effect() {
    // Same answers as on the host: `ERL_AFLAGS=... ERL_FLAGS=... ERL_ZFLAGS=...
    // bin/srcconf foreground`. Command-line application parameters override
    // sys.config; ERL_ZFLAGS comes last, so its -srcconf_label is the last one.
    let (vm, _port, body) = boot(
        &srcconf_release(),
        8080,
        &[
            "-e",
            "GREETING=hi",
            "-e",
            "LABEL=x",
            "-e",
            "ERL_AFLAGS=-srcconf color from_aflags",
            "-e",
            "ERL_FLAGS=-srcconf greeting from_flags",
            "-e",
            "ERL_ZFLAGS=-srcconf_label from_zflags",
        ],
    );
    let seen = pairs(&body);
    assert_eq!(seen["color"], "from_aflags", "body: {body}");
    assert_eq!(seen["greeting"], "from_flags", "body: {body}");
    assert_eq!(seen["label"], "from_zflags", "body: {body}");
    stop_cleanly(vm);
}

#[test]
fn vm_args_args_file_chain_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("hello");
    copy_tree(&hello_release(), &copy);
    let vsn = copy.join("releases/0.1.0");
    let mut args = fs::read_to_string(vsn.join("vm.args")).unwrap();
    // Relative to the release root, the directory relx's script runs erlexec in.
    args.push_str("\n-args_file releases/0.1.0/extra.args\n");
    fs::write(vsn.join("vm.args"), args).unwrap();
    fs::write(
        vsn.join("extra.args"),
        "## chained from vm.args\n-env GREETING chained\n",
    )
    .unwrap();
    // A start-script variable unibeam does not act on is named, not dropped silently.
    let (vm, _port, body) = boot(&copy, 8080, &["-e", "RELX_MULTI_NODE=1"]);
    assert!(body.contains("greeting: chained"), "body: {body}");
    assert!(body.contains("(node hello@"), "vm.args still read: {body}");
    assert!(
        vm.output().contains("warning: -e RELX_MULTI_NODE: not acted on"),
        "{}",
        vm.output()
    );
    stop_cleanly(vm);
}

/// A copy of examples/hello built as 0.1.0 (port 8080) and then, in the
/// same _build, as 0.2.0 whose sys.config moves it to port 8082.
fn hello_with_two_versions(dir: &Path) -> PathBuf {
    let project = dir.join("hello");
    copy_project(
        &workspace_root().join("examples/hello"),
        &["rebar.config", "apps", "config"],
        &project,
    );
    run_tool(&project, "rebar3", &["as", "prod", "release"]);
    for file in ["rebar.config", "apps/hello/src/hello.app.src"] {
        let path = project.join(file);
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"0.1.0\""), "{file} names 0.1.0");
        fs::write(&path, text.replace("\"0.1.0\"", "\"0.2.0\"")).unwrap();
    }
    fs::write(project.join("config/sys.config"), "[{hello, [{port, 8082}]}].\n").unwrap();
    run_tool(&project, "rebar3", &["as", "prod", "release"]);
    let rel = project.join("_build/prod/rel/hello");
    // What relx leaves: both versions' directories, the new one current.
    assert!(rel.join("releases/0.1.0/start.boot").is_file());
    assert!(rel.join("releases/0.2.0/start.boot").is_file());
    assert!(rel.join("lib/hello-0.1.0").is_dir() && rel.join("lib/hello-0.2.0").is_dir());
    let start_erl = fs::read_to_string(rel.join("releases/start_erl.data")).unwrap();
    assert!(
        start_erl.trim().ends_with(" 0.2.0"),
        "start_erl.data: {start_erl}"
    );
    rel
}

#[test]
fn several_versions_boot_the_current_one_or_the_one_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let rel = hello_with_two_versions(dir.path());

    let current = dir.path().join("current.unibeam");
    let out = build(&rel, &current, &[]);
    assert!(out.status.success(), "build: {}", stderr(&out));
    let (vm, _port, body) = boot(&current, 8082, &[]);
    assert!(body.starts_with("hello from hello on "), "body: {body}");
    assert!(
        vm.output().contains("BEAM exec'd: hello 0.2.0"),
        "{}",
        vm.output()
    );
    stop_cleanly(vm);

    let old = dir.path().join("old.unibeam");
    let out = build(&rel, &old, &["--release-version", "0.1.0"]);
    assert!(
        out.status.success(),
        "build --release-version 0.1.0: {}",
        stderr(&out)
    );
    let (vm, _port, body) = boot(&old, 8080, &[]);
    assert!(body.starts_with("hello from hello on "), "body: {body}");
    assert!(
        vm.output().contains("BEAM exec'd: hello 0.1.0"),
        "{}",
        vm.output()
    );
    stop_cleanly(vm);
}

#[test]
fn a_rebar3_dev_mode_release_is_refused_with_the_command_to_run() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("stock");
    copy_project(
        &workspace_root().join("tests/fixtures/stock"),
        &["rebar.config", "apps", "config"],
        &project,
    );
    // The default profile: mode dev, everything symlinked into _build.
    run_tool(&project, "rebar3", &["release"]);
    let rel = project.join("_build/default/rel/stock");
    assert!(
        fs::symlink_metadata(rel.join("lib/stock-0.1.0"))
            .unwrap()
            .file_type()
            .is_symlink(),
        "rebar3 release made a dev-mode release"
    );

    let out = build(&rel, &dir.path().join("dev.unibeam"), &[]);
    assert!(!out.status.success(), "a dev-mode release was accepted");
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line:\n{err}");
    assert!(lines[0].contains("rebar3 as prod release"), "{err}");

    // The project directory, which has only that dev-mode release.
    let out = build(&project, &dir.path().join("dev2.unibeam"), &[]);
    assert!(
        !out.status.success(),
        "a project with only a dev-mode release was accepted"
    );
    assert!(
        stderr(&out).contains("rebar3 as prod release"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn env_sh_lines_unibeam_cannot_interpret_get_a_warning_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();

    // The fixture's own env.sh (comments and plain exports) builds quietly.
    let out = build(&mixenv_release(), &dir.path().join("mixenv.unibeam"), &[]);
    assert!(out.status.success(), "build: {}", stderr(&out));
    assert!(
        !stderr(&out)
            .lines()
            .any(|l| l.starts_with("warning: ") && l.contains("env.sh")),
        "{}",
        stderr(&out)
    );

    let copy = dir.path().join("mixenv");
    copy_tree(&mixenv_release(), &copy);
    let env_sh = copy.join("releases/0.1.0/env.sh");
    let mut text = fs::read_to_string(&env_sh).unwrap();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    let case_line = text.lines().count() + 1;
    let subst_line = case_line + 1;
    text.push_str("case \"$RELEASE_COMMAND\" in start) export MIXENV_MODE=started ;; esac\n");
    text.push_str("export MIXENV_HOST=$(hostname)\n");
    fs::write(&env_sh, text).unwrap();

    let out = build(&copy, &dir.path().join("copy.unibeam"), &[]);
    let err = stderr(&out);
    assert!(out.status.success(), "warnings, not an error: {err}");
    let warnings: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("warning: ") && l.contains("env.sh:"))
        .collect();
    for line in [case_line, subst_line] {
        assert!(
            warnings.iter().any(|w| w.contains(&format!("env.sh:{line}"))),
            "no warning for env.sh:{line}:\n{err}"
        );
    }
    assert_eq!(warnings.len(), 2, "only the two new lines:\n{err}");
}
