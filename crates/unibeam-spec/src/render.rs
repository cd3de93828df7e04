//! What relx's start script does to `sys.config` and `vm.args` before it
//! execs erlexec, as pure functions: `${VAR}` replacement from the
//! environment, and `-args_file` chains read into one text so that the
//! lines an instance overrides are dropped from every file of the chain.

/// relx's `replace_os_vars`: every `${NAME}` becomes the variable's value,
/// or nothing when it is unset; `${NAME:-default}` becomes `default` when
/// the variable is unset or empty. Unlike relx's awk loop, a value that
/// itself holds `${...}` is not expanded again (relx would loop forever on
/// `X='${X}'`).
pub fn replace_os_vars(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start + 2..].find(['}', '\n']) else {
            break;
        };
        let inner = &rest[start + 2..start + 2 + len];
        if rest[start + 2 + len..].starts_with('\n') {
            // relx matches `${[^}]*}` line by line: no closing brace on this line.
            out.push_str(&rest[..start + 2 + len]);
            rest = &rest[start + 2 + len..];
            continue;
        }
        out.push_str(&rest[..start]);
        let (name, default) = match inner.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (inner, None),
        };
        let value = env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str());
        out.push_str(match default {
            Some(default) if value.is_empty() => default,
            _ => value,
        });
        rest = &rest[start + 2 + len + 1..];
    }
    out.push_str(rest);
    out
}

/// The `${NAME}`s a template reads, for warnings about unset ones.
pub fn os_vars_read(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in text.lines() {
        let mut rest = line;
        while let Some(start) = rest.find("${") {
            let Some(len) = rest[start + 2..].find('}') else {
                break;
            };
            let inner = &rest[start + 2..start + 2 + len];
            if !inner.contains(":-") && !names.iter().any(|n| n == inner) {
                names.push(inner.to_string());
            }
            rest = &rest[start + 2 + len + 1..];
        }
    }
    names
}

/// vm.args without the lines that name the node or set the cookie, when
/// the instance spec supplies those instead.
pub fn filter_vm_args(text: &str, drop_name: bool, drop_cookie: bool) -> String {
    text.lines()
        .filter(|line| {
            let flag = line.split_whitespace().next().unwrap_or("");
            !(drop_name && (flag == "-sname" || flag == "-name") || drop_cookie && flag == "-setcookie")
        })
        .map(|line| format!("{line}\n"))
        .collect()
}

/// A line `-args_file PATH` replaced by that file's lines, recursively, as
/// erlexec would read them. Relative paths are taken from `cwd` (the
/// release root, where relx's script `cd`s). A missing file or a cycle is
/// an error naming the chain, as relx's own check makes it.
pub fn inline_args_files(
    text: &str,
    cwd: &str,
    read: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    inline(text, cwd, read, &mut vec!["vm.args".to_string()], &mut 0)
}

/// The most files a chain reads, counting each time one is read: files
/// that include the next one twice would otherwise expand to 2^depth
/// lines (relcheck refuses such chains at build; images can be edited).
const MAX_ARGS_FILES: usize = 256;

fn inline(
    text: &str,
    cwd: &str,
    read: &dyn Fn(&str) -> Option<String>,
    chain: &mut Vec<String>,
    reads: &mut usize,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let target = match (words.next(), words.next(), words.next()) {
            (Some("-args_file"), Some(path), None) => path,
            _ => {
                out.push_str(line);
                out.push('\n');
                continue;
            }
        };
        let path = if target.starts_with('/') {
            target.to_string()
        } else {
            format!("{}/{target}", cwd.trim_end_matches('/'))
        };
        if chain.contains(&path) {
            return Err(format!("-args_file {target}: circular ({})", chain.join(" -> ")));
        }
        *reads += 1;
        if *reads > MAX_ARGS_FILES {
            return Err(format!(
                "-args_file {target}: more than {MAX_ARGS_FILES} -args_file files read for vm.args; the chain includes files over and over"
            ));
        }
        let nested = read(&path).ok_or_else(|| {
            format!(
                "-args_file {target} in {}: no such file in the image",
                chain.last().expect("chain starts with vm.args")
            )
        })?;
        chain.push(path);
        out.push_str(&inline(&nested, cwd, read, chain, reads)?);
        chain.pop();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn os_vars_follow_relx() {
        let e = env(&[("GREETING", "hi & bye"), ("EMPTY", ""), ("PORT", "9000")]);
        assert_eq!(
            replace_os_vars("[{a, [{g, \"${GREETING}\"}, {p, ${PORT}}]}].\n", &e),
            "[{a, [{g, \"hi & bye\"}, {p, 9000}]}].\n"
        );
        assert_eq!(
            replace_os_vars("${MISSING}|${EMPTY}|", &e),
            "||",
            "unset is empty"
        );
        assert_eq!(
            replace_os_vars("${MISSING:-dflt} ${EMPTY:-e} ${PORT:-1}", &e),
            "dflt e 9000"
        );
        assert_eq!(
            replace_os_vars("$PORT ${ no brace\n}", &e),
            "$PORT ${ no brace\n}"
        );
        let looping = env(&[("X", "${X}")]);
        assert_eq!(replace_os_vars("${X}", &looping), "${X}", "no second pass");
        assert_eq!(os_vars_read("${A} ${B:-x} ${A}\n${C}"), ["A", "C"]);
    }

    #[test]
    fn args_file_chains_are_read_in_place() {
        let read = |p: &str| match p {
            "/r/releases/1/extra.args" => Some("-env GREETING chained\n-args_file /abs/more.args\n".into()),
            "/abs/more.args" => Some("+S 1\n".into()),
            "/r/loop.args" => Some("-args_file loop.args\n".into()),
            _ => None,
        };
        let out = inline_args_files(
            "-sname a\n-args_file releases/1/extra.args\n+K true\n",
            "/r",
            &read,
        );
        assert_eq!(out.unwrap(), "-sname a\n-env GREETING chained\n+S 1\n+K true\n");
        let err = inline_args_files("-args_file loop.args\n", "/r", &read).unwrap_err();
        assert!(err.contains("circular"), "{err}");
        let err = inline_args_files("-args_file nope.args\n", "/r", &read).unwrap_err();
        assert!(err.contains("nope.args") && err.contains("vm.args"), "{err}");
    }

    /// Found by the `render` fuzz target: files that each include the
    /// next one twice (no cycle) expanded to 2^depth lines.
    #[test]
    fn a_chain_that_includes_files_over_and_over_is_refused() {
        let read = |p: &str| {
            let depth: u32 = p.strip_prefix("/r/")?.parse().ok()?;
            Some(match depth {
                20 => "+K true\n".to_string(),
                _ => format!("-args_file {0}\n-args_file {0}\n", depth + 1),
            })
        };
        let out = inline_args_files("-args_file 0\n", "/r", &read);
        let err = out.as_ref().err().map(String::as_str).unwrap_or("no error");
        assert!(err.contains("more than 256 -args_file"), "{err}");
        assert_eq!(
            inline_args_files("-args_file 19\n", "/r", &read).unwrap(),
            "+K true\n+K true\n"
        );
    }

    #[test]
    fn filtering_drops_only_overridden_lines() {
        let text = "-sname hello\n-setcookie c\n+K true\n";
        assert_eq!(filter_vm_args(text, true, false), "-setcookie c\n+K true\n");
        assert_eq!(filter_vm_args(text, false, true), "-sname hello\n+K true\n");
    }
}
