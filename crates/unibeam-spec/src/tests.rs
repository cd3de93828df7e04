use super::*;
use std::net::Ipv4Addr;

fn hello() -> BootSpec {
    BootSpec::sample()
}

const VM_ARGS: &str = "-sname hello\n\n-setcookie hello_cookie\n+K true\n";

/// The image's files as the guest would read them: hello's vm.args, plus `extra`.
fn launch_with(spec: &BootSpec, extra: &[(&str, &str)]) -> BeamLaunch {
    let files: Vec<(String, String)> = [("/release/releases/0.1.0/vm.args", VM_ARGS)]
        .iter()
        .chain(extra)
        .map(|(p, t)| (p.to_string(), t.to_string()))
        .collect();
    spec.beam_launch(&|path: &str| {
        files
            .iter()
            .rev()
            .find(|(p, _)| p == path)
            .map(|(_, t)| t.clone())
    })
}

fn launch(spec: &BootSpec) -> BeamLaunch {
    launch_with(spec, &[])
}

fn joined(spec: &BootSpec) -> String {
    launch(spec).args.join(" ")
}

fn file<'a>(launch: &'a BeamLaunch, path: &str) -> Option<&'a PreparedFile> {
    launch.files.iter().find(|f| f.path == path)
}

#[test]
fn relx_args_follow_the_foreground_command() {
    let launch = launch(&hello());
    let args = launch.args.join(" ");
    assert_eq!(launch.program, "/release/erts-13.1.5/bin/erlexec");
    assert!(
        args.starts_with("-noinput +Bd +fnu +sbwt none +sbwtdcpu none +sbwtdio none -boot /release/releases/0.1.0/start -mode embedded"),
        "{args}"
    );
    assert!(args.contains("-config /release/releases/0.1.0/sys "));
    assert!(args.contains("-args_file /release/releases/0.1.0/vm.args "));
    assert!(args.contains("-start_epmd false -erl_epmd_port 4370"));
    assert!(
        args.ends_with("-s erlang display unibeam_apps_started -- foreground"),
        "{args}"
    );
    assert!(!args.contains("-sname"), "the release's vm.args names the node");
}

#[test]
fn env_points_at_the_release_erts() {
    let env = launch(&hello()).env;
    assert!(env.contains(&("BINDIR".into(), "/release/erts-13.1.5/bin".into())));
    assert!(env.contains(&("EMU".into(), "beam".into())));
    assert!(env.contains(&("LANG".into(), "C.UTF-8".into())));
    assert!(env.contains(&("ERL_INETRC".into(), "/tmp/unibeam/erl_inetrc".into())));
}

#[test]
fn optional_config_files_are_left_out() {
    let mut spec = hello();
    spec.release.has_sys_config = false;
    spec.release.has_vm_args = false;
    let args = launch(&spec).args;
    assert!(!args.iter().any(|a| a == "-config" || a == "-args_file"));
}

#[test]
fn instance_settings_reach_the_beam() {
    let mut spec = hello();
    spec.instance.env = vec![("GREETING".into(), "hi".into())];
    spec.instance.extra_vm_args = vec!["+S".into(), "1".into()];
    spec.instance.sys_config_overrides = Some("[{hello, [{port, 9000}]}].".into());
    let launch = launch(&spec);
    let args = launch.args.join(" ");
    assert!(launch.env.contains(&("GREETING".into(), "hi".into())));
    assert!(
        args.contains("-config /release/releases/0.1.0/sys -config /tmp/unibeam/overrides "),
        "{args}"
    );
    assert!(args.contains("+S 1 -start_epmd"), "{args}");
    let overrides = file(&launch, "/tmp/unibeam/overrides.config").unwrap();
    assert_eq!(
        overrides.content,
        FileContent::Text("[{hello, [{port, 9000}]}].".into())
    );
}

#[test]
fn node_name_and_cookie_replace_the_release_ones() {
    let mut spec = hello();
    spec.instance.node_name = Some("web@10.0.9.1".into());
    spec.instance.cookie = Some("s3cret".into());
    let launch = launch(&spec);
    let args = launch.args.join(" ");
    assert!(
        args.starts_with(
            "-noinput +Bd +fnu +sbwt none +sbwtdcpu none +sbwtdio none -name web@10.0.9.1 -boot"
        ),
        "{args}"
    );
    assert!(args.contains("-args_file /tmp/unibeam/vm.args "), "{args}");
    assert!(
        !args.contains("s3cret"),
        "the cookie never goes on a command line"
    );
    let vm_args = file(&launch, "/tmp/unibeam/vm.args").unwrap();
    assert_eq!(vm_args.content, FileContent::Text("\n+K true\n".into()));
    let cookie = file(&launch, "/tmp/.erlang.cookie").unwrap();
    assert!(cookie.private);
    assert_eq!(cookie.content, FileContent::Text("s3cret".into()));
    assert_eq!(launch.node.as_deref(), Some("web@10.0.9.1"));
    spec.instance.node_name = Some("web".into());
    assert!(joined(&spec).contains("-sname web -boot"));
}

#[test]
fn the_launch_names_the_node_its_vm_args_set() {
    let mut spec = hello();
    assert_eq!(launch(&spec).node.as_deref(), Some("hello"));
    spec.release.has_vm_args = false;
    assert_eq!(launch(&spec).node, None, "no vm.args, no -e, no name");
    use crate::launch::named_node;
    assert_eq!(
        named_node("+K true\n-sname stock\n-name other@h.x\n").as_deref(),
        Some("stock")
    );
    assert_eq!(named_node("## -sname commented\n+A30\n"), None);
}

#[test]
fn mix_releases_start_like_bin_start() {
    let mut spec = hello();
    spec.release.flavor = Flavor::Mix {
        runtime_config_rewrite: false,
    };
    let launch = launch_with(&spec, &[("/release/releases/0.1.0/vm.args", "")]);
    let args = launch.args.join(" ");
    assert!(
        args.starts_with("-noinput +Bd +fnu +sbwt none +sbwtdcpu none +sbwtdio none -s elixir start_cli -sname hello -boot"),
        "{args}"
    );
    assert!(args.contains("-boot_var RELEASE_LIB /release/lib"));
    assert!(args.ends_with("-extra --no-halt"), "{args}");
    let cookie = file(&launch, "/tmp/.erlang.cookie").unwrap();
    assert_eq!(
        cookie.content,
        FileContent::CopyOf("/release/releases/COOKIE".into())
    );
    assert!(launch
        .env
        .contains(&("RELEASE_SYS_CONFIG".into(), "/release/releases/0.1.0/sys".into())));
    spec.release.flavor = Flavor::Mix {
        runtime_config_rewrite: true,
    };
    let launch = launch_with(&spec, &[("/release/releases/0.1.0/vm.args", "")]);
    assert!(launch
        .args
        .join(" ")
        .contains("-config /tmp/unibeam/hello.runtime "));
    let copy = file(&launch, "/tmp/unibeam/hello.runtime.config").unwrap();
    assert_eq!(
        copy.content,
        FileContent::CopyOf("/release/releases/0.1.0/sys.config".into())
    );
}

#[test]
fn vm_args_filter_keeps_everything_else() {
    let text = "## comment\n-sname a\n-name b@x.y\n-setcookie c\n+A30\n";
    assert_eq!(
        filter_vm_args(text, true, false),
        "## comment\n-setcookie c\n+A30\n"
    );
    assert_eq!(
        filter_vm_args(text, false, true),
        "## comment\n-sname a\n-name b@x.y\n+A30\n"
    );
}

#[test]
fn netmask_from_prefix() {
    assert_eq!(netmask(24), Ipv4Addr::new(255, 255, 255, 0));
    assert_eq!(netmask(0), Ipv4Addr::new(0, 0, 0, 0));
    assert_eq!(netmask(32), Ipv4Addr::new(255, 255, 255, 255));
}

#[test]
fn spec_round_trips_through_json_and_old_specs_get_defaults() {
    let spec = hello();
    assert_eq!(BootSpec::from_json(&spec.to_json()).unwrap(), spec);
    let mut value: serde_json::Value = serde_json::from_str(&spec.to_json()).unwrap();
    value.as_object_mut().unwrap().remove("instance");
    let back: BootSpec = serde_json::from_value(value).unwrap();
    assert_eq!(back.instance.stop_timeout_s, 30);
    assert_eq!(back.instance.on_exit, ExitPolicy::Poweroff);
}

#[test]
fn cluster_members_mesh_with_every_peer_but_themselves() {
    let mut spec = hello();
    spec.instance.node_name = Some("web-1@10.77.0.2".into());
    spec.instance.cookie = Some("s3cret".into());
    spec.instance.cluster = Some(crate::ClusterSpec {
        name: "shop".into(),
        peers: ["web-1@10.77.0.2", "web-2@10.77.0.3", "web-3@10.77.0.4"]
            .map(String::from)
            .to_vec(),
        net_ticktime_s: 10,
        discovery: None,
    });
    let launch = launch(&spec);
    let i = launch
        .args
        .iter()
        .position(|a| a == "-eval")
        .expect("a mesh keeper");
    let keeper = &launch.args[i + 1];
    assert!(
        keeper.contains("['web-2@10.77.0.3','web-3@10.77.0.4']"),
        "{keeper}"
    );
    assert!(
        !keeper.contains("web-1@"),
        "a node does not dial itself: {keeper}"
    );
    let args = launch.args.join(" ");
    assert!(args.contains("-kernel net_ticktime 10 -eval"), "{args}");
    assert!(args.contains("-name web-1@10.77.0.2"), "{args}");
    assert!(
        !args.contains("s3cret"),
        "the cookie never goes on a command line"
    );
    // The keeper runs before the readiness marker, after the release boots.
    assert!(args.find("-eval").unwrap() < args.find("unibeam_apps_started").unwrap());
    // A snapshot is taken before the keeper dials anyone, so a restored
    // member holds no connections from another life.
    spec.instance.freeze_for_snapshot = true;
    let args = self::launch(&spec).args.join(" ");
    assert!(
        args.find("unibeam_apps_started").unwrap() < args.find("net_kernel:connect_node").unwrap(),
        "{args}"
    );
}

#[test]
fn small_guests_get_fewer_threads_and_allocator_instances() {
    let mut spec = hello();
    spec.instance.memory_mib = 64;
    let line = joined(&spec);
    assert!(line.contains("+SDio 2 +MMmcs 0 +Mut false"), "{line}");
    assert!(
        line.find("+Mut").unwrap() < line.find("-args_file").unwrap(),
        "the release's vm.args comes later and wins: {line}"
    );
    spec.instance.memory_mib = SMALL_GUEST_MIB;
    assert!(
        !joined(&spec).contains("+SDio"),
        "the default 128 MiB keeps the defaults"
    );
    spec.instance.memory_mib = 0;
    assert!(
        !joined(&spec).contains("+SDio"),
        "unknown memory keeps the defaults"
    );
}

#[test]
fn process_and_port_tables_follow_guest_memory() {
    let mut spec = hello();
    assert!(
        !joined(&spec).contains("+P "),
        "unknown memory keeps the BEAM's defaults"
    );
    spec.instance.memory_mib = 56;
    let line = joined(&spec);
    assert!(line.contains("+P 57344 +Q 7168"), "{line}");
    // The release's vm.args and --vm-arg come later, so they win.
    assert!(
        line.find("+P ").unwrap() < line.find("-args_file").unwrap(),
        "{line}"
    );
    spec.instance.memory_mib = 8192;
    assert!(joined(&spec).contains("+P 1048576 +Q 65536"));
    assert!(
        !joined(&spec).contains("+Mut"),
        "a big guest keeps the BEAM's allocator defaults"
    );
    spec.instance.memory_mib = 8;
    assert!(joined(&spec).contains("+P 16384 +Q 4096"));
}

fn file_text(launch: &BeamLaunch, path: &str) -> String {
    match &file(launch, path)
        .unwrap_or_else(|| panic!("{path} not prepared"))
        .content
    {
        FileContent::Text(t) => t.clone(),
        other => panic!("{path}: {other:?}"),
    }
}

#[test]
fn relx_templates_are_rendered_from_the_instance_env() {
    let mut spec = hello();
    spec.release.sys_config_source = ConfigSource::Template;
    spec.release.vm_args_source = ConfigSource::Template;
    spec.instance.env = vec![("GREETING".into(), "hi".into()), ("LABEL".into(), "lbl".into())];
    let launch = launch_with(
        &spec,
        &[
            (
                "/release/releases/0.1.0/sys.config.src",
                "[{hello, [{g, \"${GREETING}\"}, {c, \"${COLOR:-blue}\"}, {u, \"${UNSET}\"}]}].",
            ),
            // A plain file beside the template is an earlier start's output.
            (
                "/release/releases/0.1.0/sys.config",
                "[{hello, [{g, \"stale\"}]}].",
            ),
            (
                "/release/releases/0.1.0/vm.args.src",
                "-sname hello\n-hello_label ${LABEL}\n",
            ),
        ],
    );
    let args = launch.args.join(" ");
    assert!(args.contains("-config /tmp/unibeam/sys "), "{args}");
    assert!(args.contains("-args_file /tmp/unibeam/vm.args "), "{args}");
    assert_eq!(
        file_text(&launch, "/tmp/unibeam/sys.config"),
        "[{hello, [{g, \"hi\"}, {c, \"blue\"}, {u, \"\"}]}]."
    );
    assert_eq!(
        file_text(&launch, "/tmp/unibeam/vm.args"),
        "-sname hello\n-hello_label lbl\n"
    );
    assert!(
        launch.warnings.iter().any(|w| w.contains("${UNSET}")),
        "{:?}",
        launch.warnings
    );
    assert!(
        !args.contains("hi") && !args.contains("lbl"),
        "values never go on a command line"
    );
}

#[test]
fn relx_replace_os_vars_renders_plain_files_and_prefers_orig() {
    let mut spec = hello();
    spec.instance.env = vec![
        ("RELX_REPLACE_OS_VARS".into(), "true".into()),
        ("N".into(), "7".into()),
    ];
    let rendered = launch_with(
        &spec,
        &[
            ("/release/releases/0.1.0/sys.config", "[{hello, [{n, ${N}}]}]."),
            ("/release/releases/0.1.0/vm.args", "-sname hello\n+S ${N}\n"),
        ],
    );
    assert_eq!(
        file_text(&rendered, "/tmp/unibeam/sys.config"),
        "[{hello, [{n, 7}]}]."
    );
    assert_eq!(
        file_text(&rendered, "/tmp/unibeam/vm.args"),
        "-sname hello\n+S 7\n"
    );
    // Without the variable, plain files are used as they are.
    spec.instance.env.clear();
    spec.release.sys_config_source = ConfigSource::Orig;
    let plain = launch(&spec);
    assert_eq!(
        file(&plain, "/tmp/unibeam/sys.config").unwrap().content,
        FileContent::CopyOf("/release/releases/0.1.0/sys.config.orig".into())
    );
    assert!(plain
        .args
        .join(" ")
        .contains("-args_file /release/releases/0.1.0/vm.args "));
}

#[test]
fn args_file_chains_lose_overridden_lines_too() {
    let mut spec = hello();
    spec.instance.cookie = Some("s3cret".into());
    let launch = launch_with(
        &spec,
        &[
            (
                "/release/releases/0.1.0/vm.args",
                "-sname hello\n-args_file releases/0.1.0/extra.args\n",
            ),
            (
                "/release/releases/0.1.0/extra.args",
                "-setcookie old\n-env GREETING chained\n",
            ),
        ],
    );
    assert_eq!(
        file_text(&launch, "/tmp/unibeam/vm.args"),
        "-sname hello\n-env GREETING chained\n"
    );
}

fn mix(spec: &mut BootSpec) {
    spec.release.flavor = Flavor::Mix {
        runtime_config_rewrite: false,
    };
    spec.release.env_sh = true;
}

#[test]
fn mix_env_sh_names_the_node_and_exports_variables() {
    let mut spec = hello();
    mix(&mut spec);
    spec.instance.env = vec![("ERL_AFLAGS".into(), "-kernel x y".into())];
    let env_sh = "#!/bin/sh\n# export RELEASE_DISTRIBUTION=name\nexport RELEASE_DISTRIBUTION=name\n\
                  export RELEASE_NODE=\"$RELEASE_NAME@127.0.0.1\"\nexport COLOR=green\n\
                  export RELEASE_COOKIE=from_env_sh\nexport ELIXIR_ERL_OPTIONS=\"+S 1\"\n";
    let launch = launch_with(&spec, &[("/release/releases/0.1.0/env.sh", env_sh)]);
    let args = launch.args.join(" ");
    assert!(
        args.contains("-s elixir start_cli -name hello@127.0.0.1 -boot"),
        "{args}"
    );
    assert!(args.contains("+S 1 -start_epmd"), "{args}");
    let has = |k: &str, v: &str| launch.env.contains(&(k.to_string(), v.to_string()));
    assert!(has("COLOR", "green") && has("RELEASE_NODE", "hello@127.0.0.1"));
    assert!(
        has("ERL_AFLAGS", "-kernel x y"),
        "erlexec reads ERL_*FLAGS itself"
    );
    assert!(has("PATH", "/release/erts-13.1.5/bin:/usr/bin:/bin"));
    assert!(
        has("HOSTNAME", "hello"),
        "the guest's hostname, as containers export it"
    );
    assert_eq!(file_text(&launch, "/tmp/.erlang.cookie"), "from_env_sh");
    assert!(launch.warnings.is_empty(), "{:?}", launch.warnings);
}

#[test]
fn mix_distribution_none_and_given_values_win() {
    let mut spec = hello();
    mix(&mut spec);
    let env_sh = "export RELEASE_DISTRIBUTION=${RELEASE_DISTRIBUTION:-sname}\nexport RELEASE_MODE=embedded\n\
                  case $RELEASE_COMMAND in\n";
    spec.instance.env = vec![("RELEASE_DISTRIBUTION".into(), "none".into())];
    spec.release.code_loading = crate::CodeLoading::Interactive;
    let launch = launch_with(&spec, &[("/release/releases/0.1.0/env.sh", env_sh)]);
    let args = launch.args.join(" ");
    assert!(!args.contains("-sname") && !args.contains("-name"), "{args}");
    assert!(
        args.contains("-mode embedded"),
        "RELEASE_MODE from env.sh: {args}"
    );
    assert_eq!(launch.warnings.len(), 1, "{:?}", launch.warnings);
    assert!(launch.warnings[0].contains("env.sh:3"), "{:?}", launch.warnings);
    // The instance's node name beats env.sh's.
    spec.instance.node_name = Some("web@10.0.0.2".into());
    assert!(joined(&spec).contains("-name web@10.0.0.2 -boot"));
}

#[test]
fn a_planned_launch_selects_tls_distribution_before_the_release_args() {
    let mut spec = hello();
    spec.instance.node_name = Some("hello@10.0.2.15".into());
    spec.instance.dist_tls = Some(DistTls {
        ca_pem: "CA".into(),
        cert_pem: "CERT".into(),
        key_pem: "KEY".into(),
    });
    let launch = launch_with(&spec, &[]);
    let at = launch.args.iter().position(|a| a == "-proto_dist").unwrap();
    assert_eq!(launch.args[at + 1], "inet_tls");
    let end = launch.args.iter().position(|a| a == "--").unwrap();
    assert!(at < end, "{:?}", launch.args);
    assert!(launch
        .files
        .iter()
        .any(|f| f.path.ends_with("dist-tls.conf") && f.private));
    // A boot spec written before the field existed still reads.
    let mut json: serde_json::Value = serde_json::from_str(&spec.to_json()).unwrap();
    json["instance"].as_object_mut().unwrap().remove("dist_tls");
    let old = BootSpec::from_json(&json.to_string()).unwrap();
    assert_eq!(old.instance.dist_tls, None);
}
