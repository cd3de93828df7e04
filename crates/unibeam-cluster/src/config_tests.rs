//! Tests of config.rs, kept apart to keep that file short.
use super::*;

const GOOD: &str = r#"
[cluster]
name = "shop"
net_ticktime = 8

[services.counter]
release = "examples/cluster"
replicas = 3
ports = ["18080:8080"]
env = { GREETING = "hi" }
memory = "128M"
"#;

fn error_of(text: &str) -> String {
    parse(Path::new("unibeam.toml"), text).unwrap_err().to_string()
}

#[test]
fn a_good_file_parses_with_defaults() {
    let c = parse(Path::new("unibeam.toml"), GOOD).unwrap();
    assert_eq!(c.name, "shop");
    let svc = &c.services["counter"];
    assert_eq!(svc.replicas, 3);
    assert_eq!(svc.restart, Restart::Always);
    assert!(svc.meshed);
    assert_eq!(svc.ports, [(18080, 8080)]);
    assert_eq!(svc.memory_mib, Some(128));
    assert_eq!(svc.env, [("GREETING".to_string(), "hi".to_string())]);
    assert_eq!(svc.source, Source::Release("examples/cluster".into()));
    assert_eq!(c.net_ticktime_s, 8);
    assert_eq!(c.subnet.to_string(), "10.77.0.0/24");
}

#[test]
fn syntax_errors_name_line_and_column() {
    let e = error_of("[services.web]\nrelease = \"x\"\nreplicas = \"three\"\n");
    assert!(e.starts_with("unibeam.toml:3:12: "), "{e}");
    assert!(e.contains("expected"), "{e}");
}

#[test]
fn unknown_keys_say_what_was_expected() {
    let e = error_of("[services.web]\nrelease = \"x\"\nreplica = 3\n");
    assert!(e.starts_with("unibeam.toml:3:1: "), "{e}");
    assert!(e.contains("unknown field `replica`"), "{e}");
    assert!(e.contains("replicas"), "{e}");
}

#[test]
fn semantic_errors_point_at_the_value() {
    let e = error_of("[services.web]\nrelease = \"x\"\nrestart = \"sometimes\"\n");
    assert!(e.starts_with("unibeam.toml:3:11: "), "{e}");
    assert!(e.contains("on-failure"), "{e}");
    let e = error_of("[services.web]\nrelease = \"x\"\nports = [\"80\"]\n");
    assert!(e.starts_with("unibeam.toml:3:10: "), "{e}");
    let e = error_of("[cluster]\nsubnet = \"10.0.0.0/33\"\n[services.web]\nrelease = \"x\"\n");
    assert!(e.starts_with("unibeam.toml:2:10: "), "{e}");
}

#[test]
fn a_service_needs_exactly_one_source() {
    let e = error_of("[services.web]\nreplicas = 2\n");
    assert!(e.contains("exactly one of `release` or `image`"), "{e}");
    assert!(error_of("[cluster]\n").contains("services"));
}

#[test]
fn every_field_is_checked_where_it_is() {
    let svc = "[services.web]\nrelease = \"x\"\n";
    let e = error_of(&format!("{svc}memory = \"lots\"\n"));
    assert!(
        e.starts_with("unibeam.toml:3:10: service web: memory: \"lots\""),
        "{e}"
    );
    let e = error_of(&format!("{svc}memory = \"8M\"\n"));
    assert!(e.contains("too little"), "{e}");
    let e = error_of(&format!("{svc}env = {{ \"BAD KEY\" = \"v\" }}\n"));
    assert!(
        e.starts_with("unibeam.toml:3:9: service web: env: key \"BAD KEY\""),
        "{e}"
    );
    let e = error_of(&format!("{svc}env = {{ \"A=B\" = \"v\" }}\n"));
    assert!(e.contains("\"A=B\""), "{e}");
}

#[test]
fn numbers_out_of_range_point_at_themselves() {
    let e = error_of("[cluster]\nnet_ticktime = 1\n[services.web]\nrelease = \"x\"\n");
    assert!(
        e.starts_with("unibeam.toml:2:16: net_ticktime: ") && e.contains("found 1"),
        "{e}"
    );
    let e = error_of("[services.web]\nrelease = \"x\"\nreplicas = 65\n");
    assert!(e.starts_with("unibeam.toml:3:12: service web: replicas: "), "{e}");
}

#[test]
fn host_ports_are_one_service_s_and_stay_ports() {
    let e = error_of("[services.web]\nrelease = \"x\"\nreplicas = 3\nports = [\"65534:80\"]\n");
    assert!(e.starts_with("unibeam.toml:4:10: ") && e.contains("65536"), "{e}");
    let two = "[services.web]\nrelease = \"x\"\nreplicas = 2\nports = [\"8080:80\"]\n\
               [services.api]\nrelease = \"y\"\nports = [\"8081:80\"]\n";
    let e = error_of(two);
    assert!(
        e.starts_with("unibeam.toml:7:10: service api: ports: host port 8081"),
        "{e}"
    );
    assert!(e.contains("service web (replica 2)"), "{e}");
    let e = error_of("[services.web]\nrelease = \"x\"\nports = [\"8080:80\", \"8080:81\"]\n");
    assert!(e.starts_with("unibeam.toml:3:21: "), "{e}");
}

#[test]
fn images_and_releases_must_be_there() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("unibeam.toml");
    std::fs::create_dir(dir.path().join("img")).unwrap();
    std::fs::write(dir.path().join("img/image.json"), "{}").unwrap();
    std::fs::write(
        &file,
        "[services.a]\nimage = \"img\"\n[services.b]\nimage = \"nope\"\n",
    )
    .unwrap();
    let e = load(&file).unwrap_err().to_string();
    assert!(
        e.contains("unibeam.toml:4:9: service b: image: ") && e.contains("nope"),
        "{e}"
    );
    std::fs::write(
        &file,
        "[services.a]\nimage = \"img\"\n[services.b]\nrelease = \"gone\"\n",
    )
    .unwrap();
    let e = load(&file).unwrap_err().to_string();
    assert!(
        e.contains(":4:11: service b: release: ") && e.contains("gone"),
        "{e}"
    );
}

#[test]
fn line_column_counts_from_one() {
    assert_eq!(line_column("ab\ncd", 0), (1, 1));
    assert_eq!(line_column("ab\ncd", 4), (2, 2));
}

#[test]
fn networks_and_discovery_are_checked_where_they_are_written() {
    let svc = |extra: &str| format!("[services.web]\nrelease = \"x\"\n{extra}\n");
    let c = parse(
        Path::new("unibeam.toml"),
        &svc("network = \"lan\"\ndiscovery = \"dns:web.internal\""),
    )
    .unwrap();
    let web = &c.services["web"];
    assert_eq!(web.network.as_deref(), Some("lan"));
    assert_eq!(web.discovery.as_deref(), Some("web.internal"));
    let e = error_of(&svc("discovery = \"dns:web.internal\""));
    assert!(
        e.starts_with("unibeam.toml:3:13: ") && e.contains("needs `network"),
        "{e}"
    );
    let e = error_of(&svc("network = \"lan\"\ndiscovery = \"web.internal\""));
    assert!(
        e.starts_with("unibeam.toml:4:13: ") && e.contains("expected dns:NAME"),
        "{e}"
    );
    let e = error_of(&svc("network = \"lan\"\ndiscovery = \"dns:bad name\""));
    assert!(e.contains("is not a DNS name"), "{e}");
    let e = error_of(&svc("network = \"Not-A-Name\""));
    assert!(
        e.starts_with("unibeam.toml:3:11: ") && e.contains("network"),
        "{e}"
    );
}

#[test]
fn a_shared_cookie_file_must_be_there() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("unibeam.toml");
    std::fs::create_dir(dir.path().join("img")).unwrap();
    std::fs::write(dir.path().join("img/image.json"), "{}").unwrap();
    std::fs::write(
        &file,
        "[cluster]\ncookie_file = \"secret/cookie\"\n[services.a]\nimage = \"img\"\n",
    )
    .unwrap();
    let e = load(&file).unwrap_err().to_string();
    assert!(
        e.contains("unibeam.toml:2:15: cookie_file: ") && e.contains("secret/cookie"),
        "{e}"
    );
    std::fs::create_dir(dir.path().join("secret")).unwrap();
    std::fs::write(dir.path().join("secret/cookie"), "c").unwrap();
    let c = load(&file).unwrap();
    assert_eq!(c.cookie_file.as_deref(), Some(Path::new("secret/cookie")));
}

#[test]
fn snapshot_is_off_by_default_and_refused_with_volumes() {
    let c = parse(Path::new("unibeam.toml"), GOOD).unwrap();
    assert!(!c.services["counter"].snapshot);
    let on = parse(
        Path::new("unibeam.toml"),
        "[services.web]\nrelease = \"x\"\nsnapshot = true\n",
    )
    .unwrap();
    assert!(on.services["web"].snapshot);
    let e = error_of("[services.web]\nrelease = \"x\"\nvolumes = [\"data:/data\"]\nsnapshot = true\n");
    assert!(e.starts_with("unibeam.toml:4:12: "), "{e}");
    assert!(e.contains("snapshot = true with volumes"), "{e}");
    let e = error_of("[services.web]\nrelease = \"x\"\nsnapshot = \"yes\"\n");
    assert!(e.starts_with("unibeam.toml:3:12: "), "{e}");
}
