use super::*;

#[test]
fn restart_policies_parse() {
    assert_eq!("no".parse::<Restart>().unwrap(), Restart::No);
    assert_eq!("always".parse::<Restart>().unwrap(), Restart::Always);
    assert_eq!(
        "on-failure:2".parse::<Restart>().unwrap(),
        Restart::OnFailure { max: Some(2) }
    );
    assert_eq!(
        "on-failure".parse::<Restart>().unwrap(),
        Restart::OnFailure { max: None }
    );
    for bad in ["sometimes", "on-failure:x", "on-failure:-1", "no:1", ""] {
        let err = bad.parse::<Restart>().unwrap_err().to_string();
        assert!(
            err.contains(&format!("{bad:?}")) && err.contains("on-failure[:N]"),
            "{err}"
        );
    }
}

fn name(n: &str) -> InstanceName {
    InstanceName::parse(n).unwrap()
}

fn record(n: &str) -> InstanceRecord {
    InstanceRecord {
        name: name(n),
        image: "/img".into(),
        release: "hello 0.1.0".into(),
        created: 1,
        started: None,
        ports: vec![],
        accel: "tcg".into(),
        restart: Restart::No,
        restarts: 0,
        status: Status::Starting,
        qemu: None,
        monitor: None,
        cluster: None,
        dist: None,
        foreground: false,
    }
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("instances");
    (dir, Store { root })
}

#[test]
fn names_are_claimed_once() {
    let (_dir, store) = store();
    store.create(&record("web")).unwrap();
    assert!(matches!(
        store.create(&record("web")),
        Err(StateError::NameInUse(_))
    ));
    assert_eq!(store.load(&name("web")).unwrap().name, "web");
    let taken = store.create(&record("web")).unwrap_err().to_string();
    assert!(
        taken.starts_with("instance name \"web\" is already in use"),
        "{taken}"
    );
    assert_eq!(store.list().len(), 1);
    let hidden: Vec<_> = fs::read_dir(&store.root).unwrap().flatten().collect();
    assert_eq!(hidden.len(), 1, "no staging directory stays behind");
    store.remove(&name("web")).unwrap();
    assert!(matches!(
        store.load(&name("web")),
        Err(StateError::NoSuchInstance(_))
    ));
}

#[test]
fn names_that_would_leave_the_store_do_not_parse() {
    let long = "x".repeat(65);
    for bad in [
        "../x",
        "../../x",
        "/tmp/x",
        "a/b",
        "..",
        ".",
        ".hidden",
        "",
        "a b",
        long.as_str(),
    ] {
        assert!(
            matches!(InstanceName::parse(bad), Err(StateError::BadName(_))),
            "{bad:?} parsed"
        );
    }
    assert!(serde_json::from_str::<InstanceName>("\"../x\"").is_err());
    assert_eq!(name("web-1.a_b").as_str(), "web-1.a_b");
}

#[test]
fn broken_instances_are_listed_and_removable() {
    let (_dir, store) = store();
    store.create(&record("good")).unwrap();
    fs::create_dir(store.root.join("empty")).unwrap();
    fs::create_dir(store.root.join("garbled")).unwrap();
    fs::write(store.root.join("garbled").join(RECORD_FILE), "{not json").unwrap();
    store.create(&record("other")).unwrap();
    fs::rename(store.root.join("other"), store.root.join("renamed")).unwrap();
    let listed: Vec<_> = store
        .list_all()
        .into_iter()
        .map(|(n, r)| (n.to_string(), r.map_err(|e| e.to_string())))
        .collect();
    assert_eq!(listed.len(), 4, "{listed:?}");
    let why = |n: &str| {
        listed
            .iter()
            .find(|(m, _)| m == n)
            .unwrap()
            .1
            .clone()
            .unwrap_err()
    };
    assert!(why("empty").contains("no instance.json"), "{}", why("empty"));
    assert!(why("garbled").contains("corrupt instance.json"));
    assert!(why("renamed").contains("names instance \"other\""));
    assert!(why("empty").contains("unibeam rm -f empty"));
    assert!(matches!(
        store.create(&record("empty")),
        Err(StateError::Broken { .. })
    ));
    store.remove(&name("garbled")).unwrap();
    assert!(!store.root.join("garbled").exists());
}

#[test]
fn records_that_cannot_be_encoded_leave_nothing() {
    use std::os::unix::ffi::OsStrExt;
    let (_dir, store) = store();
    let mut r = record("latin1");
    r.image = PathBuf::from(std::ffi::OsStr::from_bytes(b"/images/caf\xe9"));
    assert!(matches!(store.create(&r), Err(StateError::Encode { .. })));
    assert_eq!(fs::read_dir(&store.root).unwrap().count(), 0);
}

#[test]
fn dead_running_instances_show_as_exited_and_are_reconciled() {
    let (_dir, store) = store();
    let mut r = record("web");
    r.status = Status::Running;
    r.qemu = Some(ProcessId {
        pid: u32::MAX - 1,
        start_ticks: 5,
        boot: None,
    });
    assert_eq!(r.observed_status(), Status::Exited { code: 137 });
    store.create(&r).unwrap();
    assert_eq!(store.list()[0].status, Status::Exited { code: 137 });
    let on_disk = store.load(&name("web")).unwrap();
    assert_eq!(
        (on_disk.status, on_disk.qemu),
        (Status::Exited { code: 137 }, None)
    );
    r.qemu = ProcessId::of(std::process::id());
    assert_eq!(r.observed_status(), Status::Running);
}

#[test]
fn records_round_trip() {
    let mut r = record("db");
    r.status = Status::Exited { code: 3 };
    r.restart = Restart::OnFailure { max: Some(2) };
    let json = serde_json::to_string(&r).unwrap();
    assert!(
        json.contains("\"state\":\"exited\"") && json.contains("\"code\":3"),
        "{json}"
    );
    assert_eq!(serde_json::from_str::<InstanceRecord>(&json).unwrap(), r);
}
