use super::*;

fn padded(len: usize) -> usize {
    (len + 3) & !3
}

fn beam_file(chunks: &[(&[u8; 4], Vec<u8>)]) -> Vec<u8> {
    let mut body = b"BEAM".to_vec();
    for (id, data) in chunks {
        body.extend_from_slice(*id);
        body.extend_from_slice(&(data.len() as u32).to_be_bytes());
        body.extend_from_slice(data);
        body.resize(padded(body.len()), 0);
    }
    [&b"FOR1"[..], &(body.len() as u32).to_be_bytes(), &body].concat()
}

fn atoms(names: &[&str]) -> Vec<u8> {
    let mut out = (names.len() as u32).to_be_bytes().to_vec();
    for name in names {
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
    }
    out
}

fn imports(triples: &[(u32, u32, u32)]) -> Vec<u8> {
    let mut out = (triples.len() as u32).to_be_bytes().to_vec();
    for (m, f, a) in triples {
        for n in [m, f, a] {
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
    out
}

fn literal_table(terms: &[Vec<u8>]) -> Vec<u8> {
    use std::io::Write;
    let mut plain = (terms.len() as u32).to_be_bytes().to_vec();
    for t in terms {
        plain.extend_from_slice(&(t.len() as u32).to_be_bytes());
        plain.extend_from_slice(t);
    }
    let mut chunk = (plain.len() as u32).to_be_bytes().to_vec();
    let mut z = flate2::write::ZlibEncoder::new(&mut chunk, flate2::Compression::default());
    z.write_all(&plain).unwrap();
    z.finish().unwrap();
    chunk
}

/// `"uname -s"` as erlc stores it: STRING_EXT.
fn charlist(text: &str) -> Vec<u8> {
    [
        &[131, 107][..],
        &(text.len() as u16).to_be_bytes(),
        text.as_bytes(),
    ]
    .concat()
}

/// `{spawn, <<"hostname">>}`.
fn spawn_tuple(binary: &str) -> Vec<u8> {
    [
        &[131, 104, 2, 119, 5][..],
        b"spawn",
        &[109],
        &(binary.len() as u32).to_be_bytes(),
        binary.as_bytes(),
    ]
    .concat()
}

/// A module `name` importing the given (module, function, arity) calls.
fn module(name: &str, calls: &[(&str, &str, u32)], literals: &[Vec<u8>]) -> Vec<u8> {
    let mut names = vec![name.to_string()];
    let mut index = |atom: &str| match names.iter().position(|n| n == atom) {
        Some(i) => i as u32 + 1,
        None => {
            names.push(atom.to_string());
            names.len() as u32
        }
    };
    let triples: Vec<_> = calls.iter().map(|(m, f, a)| (index(m), index(f), *a)).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    beam_file(&[
        (b"AtU8", atoms(&refs)),
        (b"ImpT", imports(&triples)),
        (b"Code", vec![0; 8]),
        (b"LitT", literal_table(literals)),
    ])
}

#[test]
fn tables_name_imports_and_literals() {
    let data = module("stock_web", &[("os", "cmd", 1)], &[charlist("uname -s")]);
    let t = beam::tables(&data).unwrap();
    assert_eq!(t.atoms, ["stock_web", "os", "cmd"]);
    assert_eq!(t.imports, [("os".to_string(), "cmd".to_string(), 1)]);
    assert_eq!(t.literals.len(), 1);
    assert_eq!(etf_terms(&t.literals[0]).strings, ["uname -s"]);
}

#[test]
fn compact_atom_table_of_newer_otp_is_read() {
    // OTP 26: a negated count; length 3 as (3 << 4), length 20 as two bytes.
    let long = "a".repeat(20);
    let mut chunk = (-2i32).to_be_bytes().to_vec();
    chunk.push(3 << 4);
    chunk.extend_from_slice(b"abc");
    chunk.extend_from_slice(&[0x08, 20]);
    chunk.extend_from_slice(long.as_bytes());
    let t = beam::tables(&beam_file(&[(b"AtU8", chunk)])).unwrap();
    assert_eq!(t.atoms, ["abc".to_string(), long]);
}

fn strings(literal: &[u8]) -> Vec<String> {
    etf_terms(literal).strings
}

#[test]
fn strings_are_found_at_any_depth() {
    // ["ls", {"-l", 7}] with "ls" as a list of small integers.
    let term = [
        &[131, 108, 0, 0, 0, 2][..],
        &[108, 0, 0, 0, 2, 97, b'l', 97, b's', 106],
        &[104, 2, 107, 0, 2, b'-', b'l', 97, 7],
        &[106],
    ]
    .concat();
    assert_eq!(strings(&term), ["ls", "-l"]);
    let spawn = etf_terms(&spawn_tuple("hostname"));
    assert_eq!(
        (spawn.strings, spawn.atoms),
        (vec!["hostname".into()], vec!["spawn".into()])
    );
    // An improper list is no string; an unknown tag stops the walk but
    // keeps what came before.
    assert!(strings(&[131, 108, 0, 0, 0, 1, 97, b'x', 97, 1]).is_empty());
    assert_eq!(strings(&[131, 104, 2, 107, 0, 1, b'a', 200]), ["a"]);
    assert!(strings(b"junk").is_empty());
}

/// A host with `uname` (ELF), `hostname` (sh script), `env` (bash
/// script) and `echo` (a builtin).
fn fake_host() -> (tempfile::TempDir, Host) {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("uname"), b"\x7fELF....").unwrap();
    fs::write(dir.path().join("hostname"), b"#!/bin/sh\necho h\n").unwrap();
    fs::write(dir.path().join("env"), b"#!/bin/bash\n").unwrap();
    fs::write(dir.path().join("echo"), b"\x7fELF....").unwrap();
    let host = Host {
        bin_dirs: vec![dir.path().to_path_buf()],
    };
    (dir, host)
}

#[test]
fn programs_are_host_executables_but_not_builtins() {
    let (_dir, host) = fake_host();
    assert_eq!(host.program("uname").unwrap().0, "uname");
    assert_eq!(host.program("/bin/uname").unwrap().0, "uname");
    assert_eq!(host.program("hostname").unwrap().0, "hostname");
    for not in ["env", "echo", "sh", "missing", "", "../uname", "a b"] {
        assert!(host.program(not).is_none(), "{not}");
    }
}

fn release(apps: &[(&str, &str, Vec<u8>)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (app, module, data) in apps {
        let ebin = dir.path().join(format!("lib/{app}/ebin"));
        fs::create_dir_all(&ebin).unwrap();
        fs::write(ebin.join(format!("{module}.beam")), data).unwrap();
    }
    dir
}

#[test]
fn platform_modules_do_not_count_but_the_release_own_do() {
    let (_host_dir, host) = fake_host();
    let os = module("os", &[("erlang", "open_port", 2)], &[spawn_tuple("uname")]);
    let clean = release(&[("kernel-8.5.3", "os", os.clone())]);
    assert_eq!(scan(clean.path(), &host).unwrap(), ShellNeed::default());

    let web = module(
        "stock_web",
        &[("os", "cmd", 1), ("lists", "map", 2)],
        &[
            charlist("uname -s"),
            charlist("echo hi"),
            charlist("nothing here"),
        ],
    );
    let rel = release(&[("kernel-8.5.3", "os", os), ("stock_web-1.0", "stock_web", web)]);
    let need = scan(rel.path(), &host).unwrap();
    assert_eq!(need.reasons, ["stock_web calls os:cmd/1"]);
    assert_eq!(need.programs, BTreeSet::from(["uname".to_string()]));
    assert_eq!(
        need.never_warning().unwrap(),
        "--shell never: os:cmd/1 in stock_web will fail"
    );
}

#[test]
fn os_mon_needs_the_shell_and_df() {
    let (_host_dir, host) = fake_host();
    let memsup = module("memsup", &[("os", "cmd", 1)], &[]);
    let rel = release(&[("os_mon-2.8", "memsup", memsup)]);
    let need = scan(rel.path(), &host).unwrap();
    assert_eq!(need.reasons, ["os_mon (memsup, cpu_sup, disksup)"]);
    assert_eq!(need.programs, BTreeSet::from(["df".to_string()]));
    assert!(need
        .never_warning()
        .unwrap()
        .contains("os_mon's memsup/cpu_sup/disksup"));
}

#[test]
fn open_port_needs_spawn_and_system_cmd_needs_only_programs() {
    let (_host_dir, host) = fake_host();
    let ports = module(
        "ports",
        &[("erlang", "open_port", 2)],
        &[spawn_tuple("hostname -f")],
    );
    let exec_only = module("exec_only", &[("erlang", "open_port", 2)], &[]);
    let ex = module(
        "Elixir.Stock.Sys",
        &[("Elixir.System", "cmd", 2)],
        &[spawn_tuple("uname")],
    );
    let rel = release(&[
        ("app-1", "ports", ports),
        ("app-1", "exec_only", exec_only),
        ("app-1", "ex", ex),
    ]);
    let need = scan(rel.path(), &host).unwrap();
    assert_eq!(need.reasons, ["ports calls open_port({spawn, ...})"]);
    let expected: BTreeSet<String> = ["hostname", "uname"].map(String::from).into();
    assert_eq!(need.programs, expected);
}

#[test]
fn elixir_system_shell_counts() {
    let (_host_dir, host) = fake_host();
    let m = module("Elixir.Stock.Shell", &[("Elixir.System", "shell", 1)], &[]);
    let rel = release(&[("stock-1", "m", m)]);
    let need = scan(rel.path(), &host).unwrap();
    assert_eq!(need.reasons, ["Stock.Shell calls System.shell/1"]);
}

#[test]
fn real_erlc_module_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("probe.erl");
    fs::write(
        &src,
        "-module(probe).\n-export([a/0, b/0]).\na() -> os:cmd(\"uname -s\").\nb() -> open_port({spawn, <<\"hostname\">>}, []).\n",
    )
    .unwrap();
    // `make test` installs Erlang; a missing erlc fails rather than passes.
    let status = std::process::Command::new("erlc")
        .arg("-o")
        .arg(dir.path())
        .arg(&src)
        .status()
        .expect("erlc runs (apt-get install erlang-base)");
    assert!(status.success());
    let t = beam::tables(&fs::read(dir.path().join("probe.beam")).unwrap()).unwrap();
    assert!(t.imports.contains(&("os".into(), "cmd".into(), 1)));
    assert!(t.imports.contains(&("erlang".into(), "open_port".into(), 2)));
    let terms: Vec<Terms> = t.literals.iter().map(|l| etf_terms(l)).collect();
    assert!(terms.iter().any(|l| l.atoms.contains(&"spawn".to_string())));
    let strings: Vec<&String> = terms.iter().flat_map(|l| &l.strings).collect();
    assert!(strings.contains(&&"uname -s".to_string()), "{strings:?}");
    assert!(strings.contains(&&"hostname".to_string()), "{strings:?}");
    // The module as a release's own: it needs a shell, and both programs
    // where the host has them.
    let rel = release(&[(
        "probe-1",
        "probe",
        fs::read(dir.path().join("probe.beam")).unwrap(),
    )]);
    let need = scan(rel.path(), &Host::system()).unwrap();
    assert_eq!(
        need.reasons,
        ["probe calls os:cmd/1", "probe calls open_port({spawn, ...})"]
    );
    assert!(need.programs.contains("uname"), "{:?}", need.programs);
}
