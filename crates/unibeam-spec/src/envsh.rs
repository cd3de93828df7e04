//! mix's `releases/<vsn>/env.sh` (from `rel/env.sh.eex`), read without a
//! shell. `bin/<name> start` sources it before exec; the guest has no
//! shell unless the release needs one, so init interprets the subset that
//! env.sh files are made of: assignments and exports of literal, quoted
//! and `$VAR`/`${VAR}`/`${VAR:-default}`/`${VAR-default}` values, and
//! comments. Anything else (`case`, `if`, `$(...)`, functions, commands)
//! is reported by line and skipped. Our own reader: no crate parses this
//! POSIX-shell subset without also running commands.

/// One piece of a shell word.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    /// `$NAME`, `${NAME}`, `${NAME:-word}` (`empty_too`) or `${NAME-word}`.
    Var {
        name: String,
        default: Option<Vec<Piece>>,
        empty_too: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Assign {
        name: String,
        value: Vec<Piece>,
        export: bool,
    },
    Export(String),
}

/// A parsed env.sh: what it sets, and the lines it has that are not
/// plain assignments.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EnvScript {
    steps: Vec<Step>,
    /// 1-based line numbers and the lines themselves.
    pub unsupported: Vec<(usize, String)>,
}

/// What an env.sh line may hold besides assignments.
pub const ENV_SH_SUBSET: &str =
    "only comments and `[export] VAR=value` lines with quotes and $VAR/${VAR:-default} are read";

impl EnvScript {
    pub fn parse(text: &str) -> EnvScript {
        let mut script = EnvScript::default();
        for (i, line) in text.lines().enumerate() {
            match parse_line(line) {
                Some(steps) => script.steps.extend(steps),
                None => script.unsupported.push((i + 1, line.trim().to_string())),
            }
        }
        script
    }

    /// Runs the assignments over `env` (the process environment, all of
    /// it exported) and returns the new environment. Variables assigned
    /// without `export` are visible to later lines only, as in sh.
    pub fn apply(&self, env: &[(String, String)]) -> Vec<(String, String)> {
        self.apply_bounded(env).0
    }

    /// [`apply`](Self::apply), and the variables whose assignment was
    /// skipped because the value would be longer than [`MAX_VALUE`].
    pub fn apply_bounded(&self, env: &[(String, String)]) -> (Vec<(String, String)>, Vec<String>) {
        // Name, value (None: exported before it was set), exported. A
        // list, not a map: env.sh sets a handful of variables, and the
        // guest's init stays smaller without a map type.
        let mut vars: Vec<(String, Option<String>, bool)> = env
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.clone()), true))
            .collect();
        let mut skipped: Vec<String> = Vec::new();
        for step in &self.steps {
            let (name, value, export) = match step {
                Step::Assign { name, value, export } => {
                    let mut text = String::new();
                    let fits = expand(value, &vars, &mut text);
                    if !fits && !skipped.contains(name) {
                        skipped.push(name.clone());
                    }
                    (name, fits.then_some(text), *export)
                }
                Step::Export(name) => (name, None, true),
            };
            match vars.iter_mut().find(|(k, ..)| k == name) {
                Some(var) => {
                    var.1 = value.or(var.1.take());
                    var.2 |= export;
                }
                None => vars.push((name.clone(), value, export)),
            }
        }
        let vars = vars
            .into_iter()
            .filter_map(|(k, v, exported)| Some((k, v.filter(|_| exported)?)))
            .collect();
        (vars, skipped)
    }
}

/// The longest value an assignment makes: Linux refuses a longer
/// environment string at exec (MAX_ARG_STRLEN), and without a bound
/// `A=$A$A` lines double a value per line.
pub const MAX_VALUE: usize = 128 << 10;

fn lookup<'a>(vars: &'a [(String, Option<String>, bool)], name: &str) -> Option<&'a str> {
    vars.iter()
        .find(|(k, ..)| k == name)
        .and_then(|(_, v, _)| v.as_deref())
}

/// Appends the expansion to `out`; false once it would exceed [`MAX_VALUE`].
fn expand(pieces: &[Piece], vars: &[(String, Option<String>, bool)], out: &mut String) -> bool {
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Var {
                name,
                default,
                empty_too,
            } => match (lookup(vars, name), default) {
                (Some(v), _) if !(*empty_too && v.is_empty()) => out.push_str(v),
                (_, Some(word)) => {
                    if !expand(word, vars, out) {
                        return false;
                    }
                }
                (value, None) => out.push_str(value.unwrap_or("")),
            },
        }
        // A piece adds at most MAX_VALUE (no value is longer), so this
        // check keeps `out` under twice that.
        if out.len() > MAX_VALUE {
            return false;
        }
    }
    true
}

/// The steps of one line; None when the line is not in the subset.
fn parse_line(line: &str) -> Option<Vec<Step>> {
    let mut cur = Cursor::new(line.trim());
    cur.skip_blanks();
    if cur.at_end() || cur.peek() == Some('#') {
        return Some(Vec::new());
    }
    let export = cur.eat_word("export");
    let mut steps = Vec::new();
    loop {
        cur.skip_blanks();
        if cur.at_end() || cur.peek() == Some('#') {
            break;
        }
        let name = cur.name()?;
        if cur.peek() == Some('=') {
            cur.bump();
            let value = cur.word()?;
            steps.push(Step::Assign { name, value, export });
        } else if export && cur.at_blank_or_end() {
            steps.push(Step::Export(name));
        } else {
            return None;
        }
        if !cur.at_blank_or_end() {
            return None;
        }
    }
    (!steps.is_empty()).then_some(steps)
}

struct Cursor<'a> {
    rest: &'a str,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        Cursor { rest: text }
    }

    fn peek(&self) -> Option<char> {
        self.rest.chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.rest = &self.rest[c.len_utf8()..];
        Some(c)
    }

    fn at_end(&self) -> bool {
        self.rest.is_empty()
    }

    fn at_blank_or_end(&self) -> bool {
        self.peek().is_none_or(|c| c == ' ' || c == '\t')
    }

    fn skip_blanks(&mut self) {
        self.rest = self.rest.trim_start_matches([' ', '\t']);
    }

    /// `export` followed by a blank: a keyword, not a variable's prefix.
    fn eat_word(&mut self, word: &str) -> bool {
        match self.rest.strip_prefix(word) {
            Some(after) if after.starts_with([' ', '\t']) => {
                self.rest = after;
                true
            }
            _ => false,
        }
    }

    fn name(&mut self) -> Option<String> {
        let len = self
            .rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(self.rest.len());
        let name = &self.rest[..len];
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return None;
        }
        self.rest = &self.rest[len..];
        Some(name.to_string())
    }

    /// One shell word: unquoted, '...' and "..." parts, up to a blank.
    fn word(&mut self) -> Option<Vec<Piece>> {
        let mut pieces = Vec::new();
        while let Some(c) = self.peek() {
            match c {
                ' ' | '\t' => break,
                '\'' => {
                    self.bump();
                    let end = self.rest.find('\'')?;
                    pieces.push(Piece::Text(self.rest[..end].to_string()));
                    self.rest = &self.rest[end + 1..];
                }
                '"' => {
                    self.bump();
                    pieces.extend(self.until_quote()?);
                }
                _ => pieces.push(self.unquoted_piece()?),
            }
        }
        Some(pieces)
    }

    /// A character or an expansion outside quotes.
    fn unquoted_piece(&mut self) -> Option<Piece> {
        match self.bump()? {
            '$' => self.expansion(),
            '\\' => Some(Piece::Text(self.bump()?.to_string())),
            // Command substitution, globs, redirections, control operators.
            '`' | ';' | '&' | '|' | '<' | '>' | '(' | ')' | '*' | '?' | '[' => None,
            c => Some(Piece::Text(c.to_string())),
        }
    }

    /// The inside of "...", after the opening quote.
    fn until_quote(&mut self) -> Option<Vec<Piece>> {
        let mut pieces = Vec::new();
        loop {
            match self.bump()? {
                '"' => return Some(pieces),
                '$' => pieces.push(self.expansion()?),
                '`' => return None,
                '\\' => match self.bump()? {
                    c @ ('$' | '`' | '"' | '\\') => pieces.push(Piece::Text(c.to_string())),
                    c => pieces.push(Piece::Text(format!("\\{c}"))),
                },
                c => pieces.push(Piece::Text(c.to_string())),
            }
        }
    }

    /// After a `$`: `NAME` or `{NAME[:-|-]word}`; `$(` is refused.
    fn expansion(&mut self) -> Option<Piece> {
        if self.peek() != Some('{') {
            let name = self.name()?;
            return Some(Piece::Var {
                name,
                default: None,
                empty_too: false,
            });
        }
        self.bump();
        let name = self.name()?;
        let (default, empty_too) = if self.rest.starts_with(":-") {
            self.rest = &self.rest[2..];
            (Some(self.braced_word()?), true)
        } else if self.rest.starts_with('-') {
            self.rest = &self.rest[1..];
            (Some(self.braced_word()?), false)
        } else {
            (None, false)
        };
        (self.bump()? == '}').then_some(Piece::Var {
            name,
            default,
            empty_too,
        })
    }

    /// A default inside `${...}`, up to (not past) the closing brace.
    fn braced_word(&mut self) -> Option<Vec<Piece>> {
        let mut pieces = Vec::new();
        while let Some(c) = self.peek() {
            match c {
                '}' => return Some(pieces),
                '"' => {
                    self.bump();
                    pieces.extend(self.until_quote()?);
                }
                ' ' | '\t' => {
                    self.bump();
                    pieces.push(Piece::Text(c.to_string()));
                }
                _ => pieces.push(self.unquoted_piece()?),
            }
        }
        None
    }
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

    fn get(env: &[(String, String)], key: &str) -> Option<String> {
        env.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }

    /// Found by the `envsh` fuzz target: `A=$A$A` doubles A per line, so
    /// 40 such lines asked for a terabyte and aborted the process.
    #[test]
    fn values_stop_growing_at_what_linux_passes_to_a_program() {
        let text = format!("A=xxxxxxxx\nexport A\n{}B=$A\n", "A=$A$A\n".repeat(20));
        let script = EnvScript::parse(&text);
        let applied = script.apply(&[]);
        let a = get(&applied, "A").unwrap();
        assert!(a.len() <= MAX_VALUE, "A has {} bytes", a.len());
        assert_eq!(a.len(), 128 << 10, "the last assignment that fit stands");
        assert_eq!(get(&applied, "B"), None, "B is not exported, and not set");
        let (_, skipped) = script.apply_bounded(&[]);
        assert_eq!(skipped, ["A"]);
    }

    #[test]
    fn mix_template_is_all_comments() {
        let text = "#!/bin/sh\n\n# # Sets and enables heart\n# case $RELEASE_COMMAND in\n#   daemon*)\n\
                    # export RELEASE_DISTRIBUTION=name\n";
        let script = EnvScript::parse(text);
        assert!(script.unsupported.is_empty(), "{:?}", script.unsupported);
        assert_eq!(script.apply(&env(&[("A", "1")])), env(&[("A", "1")]));
    }

    #[test]
    fn exports_and_expansions_follow_sh() {
        let text = r#"
export RELEASE_DISTRIBUTION=name
export RELEASE_NODE="${RELEASE_NAME}@${HOST_IP:-127.0.0.1}"
LOCAL='not $exported'
export GREETING="hi $USER, \"q\" $LOCAL" # trailing comment
export COLOR=${COLOR-green} SIZE=${SIZE:-big}
PORT=4000
export PORT
EMPTY=
"#;
        let script = EnvScript::parse(text);
        assert!(script.unsupported.is_empty(), "{:?}", script.unsupported);
        let out = script.apply(&env(&[("RELEASE_NAME", "app"), ("USER", "bob"), ("SIZE", "")]));
        assert_eq!(get(&out, "RELEASE_DISTRIBUTION").as_deref(), Some("name"));
        assert_eq!(get(&out, "RELEASE_NODE").as_deref(), Some("app@127.0.0.1"));
        assert_eq!(
            get(&out, "GREETING").as_deref(),
            Some("hi bob, \"q\" not $exported")
        );
        assert_eq!(get(&out, "COLOR").as_deref(), Some("green"));
        assert_eq!(get(&out, "SIZE").as_deref(), Some("big"));
        assert_eq!(get(&out, "PORT").as_deref(), Some("4000"));
        assert_eq!(get(&out, "LOCAL"), None, "not exported");
        assert_eq!(get(&out, "EMPTY"), None, "not exported");
    }

    #[test]
    fn given_values_win_over_defaults() {
        let script = EnvScript::parse("export RELEASE_NODE=${RELEASE_NODE:-dflt}\n");
        let out = script.apply(&env(&[("RELEASE_NODE", "given")]));
        assert_eq!(get(&out, "RELEASE_NODE").as_deref(), Some("given"));
        // An assignment to a variable already in the environment keeps it exported.
        let out = EnvScript::parse("RELEASE_NODE=x\n").apply(&env(&[("RELEASE_NODE", "given")]));
        assert_eq!(get(&out, "RELEASE_NODE").as_deref(), Some("x"));
    }

    #[test]
    fn anything_else_is_reported_by_line() {
        let text = "export A=1\ncase $RELEASE_COMMAND in\n  start*) ;;\nesac\nexport B=$(hostname -i)\n\
                    export C=`date`\necho hi\nif [ -n \"$X\" ]; then\nexport D=\"unterminated\nA=1 cmd\n";
        let script = EnvScript::parse(text);
        let lines: Vec<usize> = script.unsupported.iter().map(|(n, _)| *n).collect();
        assert_eq!(lines, [2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(script.unsupported[0].1, "case $RELEASE_COMMAND in");
        assert_eq!(get(&script.apply(&[]), "A").as_deref(), Some("1"));
    }
}
