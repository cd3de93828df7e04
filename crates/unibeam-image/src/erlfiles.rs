//! Erlang files checked on the host, where a bad one costs one line
//! instead of a boot: the boot script (external term format),
//! `start_erl.data`, the ERTS it names, and config terms such as
//! `--sys-config` files (Erlang term syntax).

use erl_tokenize::{Token, TokenKind};
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use thiserror::Error;
use unibeam_spec::hostfs::{at, PathIo};

#[derive(Debug, Error)]
pub enum ErlFileError {
    #[error(transparent)]
    Io(#[from] PathIo),
    #[error("{path}: not text ({bytes} bytes of binary data); expected one line \"<erts-vsn> <release-vsn>\", as relx writes it")]
    NotText { path: PathBuf, bytes: usize },
    #[error("{path}: not a usable boot script: {problem}; rebuild the release (rebar3 as prod release)")]
    BootScript { path: PathBuf, problem: String },
    #[error("{file} names ERTS {named}, but the release holds {found}; make them agree (rebuild the release, or fix {file})")]
    ErtsMismatch {
        file: PathBuf,
        named: String,
        found: String,
    },
}

/// `releases/start_erl.data` as text; `None` when there is none. A file
/// that is not text is named as such, not as a missing one.
pub fn read_start_erl_data(path: &Path) -> Result<Option<String>, ErlFileError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(at(path)(e)),
    };
    let not_text = || ErlFileError::NotText {
        path: path.to_path_buf(),
        bytes: bytes.len(),
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| not_text())?;
    if text.chars().any(|c| c.is_control() && !c.is_whitespace()) {
        return Err(not_text());
    }
    Ok(Some(text.to_string()))
}

/// A release that holds some `erts-*/` but not the `erts-<named>/` that
/// `file` names was built inconsistently (or edited): say so with both
/// versions. A release with no ERTS at all is left to the caller.
pub fn check_erts_named(root: &Path, named: &str, file: &Path) -> Result<(), ErlFileError> {
    if root.join(format!("erts-{named}")).exists() {
        return Ok(());
    }
    let mut found: Vec<String> = fs::read_dir(root)
        .map_err(at::<PathIo>(root))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("erts-"))
        .collect();
    if found.is_empty() {
        return Ok(());
    }
    found.sort();
    Err(ErlFileError::ErtsMismatch {
        file: file.to_path_buf(),
        named: named.to_string(),
        found: found.join(", "),
    })
}

/// Checks that `path` holds a whole boot script, as `systools` writes it.
pub fn check_boot_file(path: &Path) -> Result<(), ErlFileError> {
    let data = fs::read(path).map_err(at::<PathIo>(path))?;
    check_boot_script(&data).map_err(|problem| ErlFileError::BootScript {
        path: path.to_path_buf(),
        problem,
    })
}

/// External term format's version byte, and the tag of a zlib-compressed term.
const ETF_VERSION: u8 = 131;
const ETF_COMPRESSED: u8 = 80;
/// Boot scripts are tens of KB; a compressed one claiming more is corrupt.
const MAX_BOOT_SCRIPT: usize = 64 << 20;

/// A boot script is `term_to_binary({script, {Name, Vsn}, Instructions})`.
/// The walk below checks that it is one complete term and nothing more.
/// It is ours rather than a decoder crate's (eetf) because those allocate
/// by the length fields before reading the data, so a damaged file could
/// abort the process on a huge allocation; this walk allocates nothing.
pub fn check_boot_script(data: &[u8]) -> Result<(), String> {
    if data.first() != Some(&ETF_VERSION) {
        return Err("it does not start with the external term format's version byte 131".into());
    }
    let inflated;
    let term = if data.get(1) == Some(&ETF_COMPRESSED) {
        inflated = inflate(&data[2..])?;
        &inflated[..]
    } else {
        &data[1..]
    };
    let end = skip_terms(term, 0, 1)?;
    if end != term.len() {
        return Err(format!("{} bytes follow the term", term.len() - end));
    }
    // {script, ...}: a 3-tuple whose first element is the atom `script`.
    let head = term.get(..11);
    let script_atom = [
        &[104, 3, 100, 0, 6][..],
        &[104, 3, 115, 6][..],
        &[104, 3, 118, 0, 6][..],
        &[104, 3, 119, 6][..],
    ];
    let is_script = script_atom.iter().any(|prefix| {
        head.is_some_and(|h| h.starts_with(prefix) && h[prefix.len()..].starts_with(b"script"))
    });
    if !is_script {
        return Err("the term is not a {script, ...} tuple".into());
    }
    Ok(())
}

/// A compressed term: a 4-byte size, then zlib data inflating to exactly it.
fn inflate(data: &[u8]) -> Result<Vec<u8>, String> {
    let size = data
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or("truncated in the compressed term's size")?;
    if size > MAX_BOOT_SCRIPT {
        return Err(format!("the compressed term claims {size} bytes"));
    }
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(&data[4..])
        .take(size as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("the compressed term is damaged ({e})"))?;
    if out.len() != size {
        return Err(format!(
            "the compressed term inflates to {} bytes, not {size}",
            out.len()
        ));
    }
    Ok(out)
}

/// Skips `count` terms starting at `pos`; returns where they end. Only the
/// literal terms a boot script holds are known: pids, ports, references
/// and funs never appear in one.
fn skip_terms(buf: &[u8], mut pos: usize, count: u64) -> Result<usize, String> {
    let truncated = |at: usize| format!("truncated at byte {at} of {}", buf.len());
    let be = |at: usize, n: usize| -> Result<u64, String> {
        let bytes = buf.get(at..at + n).ok_or_else(|| truncated(at))?;
        Ok(bytes.iter().fold(0u64, |v, b| v << 8 | u64::from(*b)))
    };
    let mut pending = count;
    while pending > 0 {
        pending -= 1;
        let tag = *buf.get(pos).ok_or_else(|| truncated(pos))?;
        let at = pos + 1;
        // (bytes to skip after the tag, terms that follow them)
        let (skip, terms) = match tag {
            97 => (1, 0),                     // small integer
            98 => (4, 0),                     // integer
            70 => (8, 0),                     // new float
            99 => (31, 0),                    // old float
            100 | 118 => (2 + be(at, 2)?, 0), // atom, utf8 atom
            115 | 119 => (1 + be(at, 1)?, 0), // small atoms
            106 => (0, 0),                    // []
            107 => (2 + be(at, 2)?, 0),       // string (byte list)
            109 => (4 + be(at, 4)?, 0),       // binary
            77 => (5 + be(at, 4)?, 0),        // bit binary
            110 => (2 + be(at, 1)?, 0),       // small big
            111 => (5 + be(at, 4)?, 0),       // large big
            104 => (1, be(at, 1)?),           // small tuple
            105 => (4, be(at, 4)?),           // large tuple
            108 => (4, be(at, 4)? + 1),       // list, then its tail
            116 => (4, be(at, 4)? * 2),       // map
            other => {
                return Err(format!(
                    "byte {pos} has term tag {other}, which no boot script holds"
                ))
            }
        };
        pos = usize::try_from(skip)
            .ok()
            .and_then(|s| at.checked_add(s))
            .filter(|end| *end <= buf.len())
            .ok_or_else(|| truncated(buf.len()))?;
        pending += terms;
        // Every term takes at least a byte: more pending than bytes left
        // means the file ends too soon, however it continues.
        if pending > (buf.len() - pos) as u64 {
            return Err(truncated(buf.len()));
        }
    }
    Ok(pos)
}

/// Where a config term file goes wrong, 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TermError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for TermError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

/// Checks that `text` is what `-config` reads: one list term, ended by a
/// `.`, with nothing after it but comments and white space. Tokens come
/// from erl_tokenize (erl_scan's rules); the grammar of literal terms is
/// small enough to check here, where a full Erlang parser would also
/// accept expressions the BEAM refuses in a config file.
pub fn check_config(text: &str) -> Result<(), TermError> {
    let tokens = erl_tokenize::scan_tokens(text).map_err(|e| TermError {
        line: e.position.line().get(),
        column: e.position.column().get(),
        message: e.kind.message().to_string(),
    })?;
    let tokens: Vec<Token> = tokens.into_iter().filter(|t| t.kind().is_lexical()).collect();
    let mut p = Terms {
        text,
        tokens: &tokens,
        next: 0,
    };
    if p.peek() != Some(sym(erl_tokenize::Symbol::OpenSquare)) {
        return Err(p.error_here("expected a list `[...]`, the form of a config file"));
    }
    p.term(0)?;
    p.expect(erl_tokenize::Symbol::Dot, "'.' after the list")?;
    if p.peek().is_some() {
        return Err(p.error_here("expected nothing after the term's '.'"));
    }
    Ok(())
}

fn sym(s: erl_tokenize::Symbol) -> TokenKind {
    TokenKind::Symbol(s)
}

/// How deep terms may nest: far more than any config needs, and little
/// enough stack for the recursion.
const MAX_DEPTH: usize = 200;

struct Terms<'a> {
    text: &'a str,
    tokens: &'a [Token],
    next: usize,
}

impl Terms<'_> {
    fn peek(&self) -> Option<TokenKind> {
        self.tokens.get(self.next).map(|t| t.kind())
    }

    fn error_here(&self, message: impl Into<String>) -> TermError {
        let (line, column, found) = match self.tokens.get(self.next) {
            Some(t) => (
                t.start().line().get(),
                t.start().column().get(),
                format!("{:?}", t.text(self.text)),
            ),
            None => {
                let line = self.text.matches('\n').count() + 1;
                let column = self.text.len() - self.text.rfind('\n').map_or(0, |i| i + 1) + 1;
                (line, column, "the end of the file".to_string())
            }
        };
        TermError {
            line,
            column,
            message: format!("{}, found {found}", message.into()),
        }
    }

    fn take(&mut self, want: impl Fn(TokenKind) -> bool, what: &str) -> Result<TokenKind, TermError> {
        match self.peek() {
            Some(kind) if want(kind) => {
                self.next += 1;
                Ok(kind)
            }
            _ => Err(self.error_here(format!("expected {what}"))),
        }
    }

    fn expect(&mut self, s: erl_tokenize::Symbol, what: &str) -> Result<(), TermError> {
        self.take(|k| k == sym(s), what).map(|_| ())
    }

    fn eat(&mut self, s: erl_tokenize::Symbol) -> bool {
        self.take(|k| k == sym(s), "").is_ok()
    }

    fn term(&mut self, depth: usize) -> Result<(), TermError> {
        use erl_tokenize::Symbol as S;
        if depth > MAX_DEPTH {
            return Err(self.error_here(format!("terms nested more than {MAX_DEPTH} deep")));
        }
        let number = |k: TokenKind| matches!(k, TokenKind::Integer | TokenKind::Float);
        match self.peek() {
            Some(TokenKind::Variable) => {
                Err(self.error_here("expected a term (a config file holds no variables)"))
            }
            Some(TokenKind::Atom | TokenKind::Char | TokenKind::Integer | TokenKind::Float) => {
                self.next += 1;
                Ok(())
            }
            Some(TokenKind::String) => {
                // Adjacent strings are one string.
                while self.peek() == Some(TokenKind::String) {
                    self.next += 1;
                }
                Ok(())
            }
            Some(TokenKind::Symbol(S::Hyphen | S::Plus)) => {
                self.next += 1;
                self.take(number, "a number after the sign").map(|_| ())
            }
            Some(TokenKind::Symbol(S::OpenSquare)) => {
                self.next += 1;
                self.list(depth)
            }
            Some(TokenKind::Symbol(S::OpenBrace)) => {
                self.next += 1;
                self.sequence(S::CloseBrace, "',' or '}'", depth, |p, d| p.term(d))
            }
            Some(TokenKind::Symbol(S::Sharp)) => {
                self.next += 1;
                self.expect(S::OpenBrace, "'{' after '#'")?;
                self.sequence(S::CloseBrace, "',' or '}'", depth, |p, d| {
                    p.term(d)?;
                    p.take(|k| matches!(k, TokenKind::Symbol(S::DoubleRightArrow)), "'=>'")?;
                    p.term(d)
                })
            }
            Some(TokenKind::Symbol(S::DoubleLeftAngle)) => {
                self.next += 1;
                self.sequence(S::DoubleRightAngle, "',' or '>>'", depth, |p, _| p.segment())
            }
            _ => Err(self.error_here("expected a term")),
        }
    }

    /// Items separated by ',' up to `close` (possibly none), the opening
    /// token already taken.
    fn sequence(
        &mut self,
        close: erl_tokenize::Symbol,
        expected: &str,
        depth: usize,
        item: impl Fn(&mut Self, usize) -> Result<(), TermError>,
    ) -> Result<(), TermError> {
        use erl_tokenize::Symbol as S;
        if self.eat(close) {
            return Ok(());
        }
        loop {
            item(self, depth + 1)?;
            if self.eat(close) {
                return Ok(());
            }
            if !self.eat(S::Comma) {
                return Err(self.error_here(format!("expected {expected}")));
            }
        }
    }

    /// `[a, b | Tail]`, the '[' already taken.
    fn list(&mut self, depth: usize) -> Result<(), TermError> {
        use erl_tokenize::Symbol as S;
        if self.eat(S::CloseSquare) {
            return Ok(());
        }
        loop {
            self.term(depth + 1)?;
            if self.eat(S::VerticalBar) {
                self.term(depth + 1)?;
                return self.expect(S::CloseSquare, "']' after the list's tail");
            }
            if self.eat(S::CloseSquare) {
                return Ok(());
            }
            if !self.eat(S::Comma) {
                return Err(self.error_here("expected ',', '|' or ']'"));
            }
        }
    }

    /// A binary segment: `Value[:Size][/Type-Spec]`.
    fn segment(&mut self) -> Result<(), TermError> {
        use erl_tokenize::Symbol as S;
        let value = |k: TokenKind| {
            matches!(
                k,
                TokenKind::Integer | TokenKind::Float | TokenKind::Char | TokenKind::String
            )
        };
        if self.eat(S::Hyphen) {
            self.take(|k| matches!(k, TokenKind::Integer | TokenKind::Float), "a number")?;
        } else {
            self.take(value, "a binary segment's value")?;
            while self.peek() == Some(TokenKind::String) {
                self.next += 1;
            }
        }
        if self.eat(S::Colon) {
            self.take(|k| k == TokenKind::Integer, "a segment size")?;
        }
        if self.eat(S::Slash) {
            loop {
                self.take(|k| k == TokenKind::Atom, "a type specifier such as utf8")?;
                if self.eat(S::Colon) {
                    self.take(|k| k == TokenKind::Integer, "a unit")?;
                }
                if !self.eat(S::Hyphen) {
                    break;
                }
            }
        }
        Ok(())
    }
}

/// `term_to_binary({script, {"hello", "0.1.0"}, []})`, for tests of
/// releases that need a boot script but never boot.
#[cfg(test)]
pub(crate) const MINIMAL_BOOT: &[u8] = &[
    131, 104, 3, 100, 0, 6, b's', b'c', b'r', b'i', b'p', b't', 104, 2, 107, 0, 5, b'h', b'e', b'l', b'l',
    b'o', 107, 0, 5, b'0', b'.', b'1', b'.', b'0', 106,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_boot_scripts_pass_and_cut_ones_do_not() {
        assert_eq!(check_boot_script(MINIMAL_BOOT), Ok(()));
        for cut in 0..MINIMAL_BOOT.len() {
            let err = check_boot_script(&MINIMAL_BOOT[..cut]).unwrap_err();
            assert!(cut < 2 || err.contains("truncated"), "{cut}: {err}");
        }
        let mut longer = MINIMAL_BOOT.to_vec();
        longer.push(106);
        assert!(check_boot_script(&longer).unwrap_err().contains("1 bytes follow"));
        // {other, ...}
        let mut other = MINIMAL_BOOT.to_vec();
        other[6] = b'S';
        assert!(check_boot_script(&other).unwrap_err().contains("{script"));
    }

    #[test]
    fn huge_lengths_are_truncation_not_allocation() {
        // A list claiming 2^32-1 elements, a binary claiming 4 GiB.
        assert!(check_boot_script(&[131, 108, 255, 255, 255, 255, 106])
            .unwrap_err()
            .contains("truncated"));
        assert!(check_boot_script(&[131, 109, 255, 255, 255, 255, 1])
            .unwrap_err()
            .contains("truncated"));
        assert!(check_boot_script(&[131, 80, 255, 255, 255, 255])
            .unwrap_err()
            .contains("claims"));
        assert!(check_boot_script(&[131, 88, 0]).unwrap_err().contains("tag 88"));
    }

    #[test]
    fn compressed_boot_scripts_are_inflated() {
        use flate2::write::ZlibEncoder;
        use std::io::Write;
        let mut z = ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&MINIMAL_BOOT[1..]).unwrap();
        let mut data = vec![131, 80];
        data.extend_from_slice(&(MINIMAL_BOOT.len() as u32 - 1).to_be_bytes());
        data.extend(z.finish().unwrap());
        assert_eq!(check_boot_script(&data), Ok(()));
        let cut = &data[..data.len() - 3];
        assert!(check_boot_script(cut).is_err());
    }

    fn config_error(text: &str) -> String {
        check_config(text).unwrap_err().to_string()
    }

    #[test]
    fn config_terms_that_the_beam_reads() {
        for good in [
            "[].",
            "[{hello, [{greeting, \"hi\" \"there\"}, {n, -3}, {f, 1.5e3}]}].\n%% trailing comment\n",
            "[{kernel, [{logger, [{handler, default, logger_std_h, #{level => info}}]}]}].",
            "[{a, <<\"bin\"/utf8, 1:8, -1/signed-integer-unit:8>>}, {b, [x | y]}, {c, $a}, 'quoted atom'].",
            "[\"/etc/other.config\"].",
        ] {
            assert_eq!(check_config(good), Ok(()), "{good}");
        }
    }

    #[test]
    fn config_errors_say_where_and_what() {
        assert_eq!(
            config_error("[{hello, [{greeting, \"hi\"}]]}.\n"),
            "1:28: expected ',' or '}', found \"]\""
        );
        assert!(
            config_error("[{hello, []}]\n").starts_with("2:1: expected '.' after the list, found the end")
        );
        assert!(config_error("{a, b}.").contains("expected a list"));
        assert!(config_error("[a].\n[b].").starts_with("2:1: expected nothing after"));
        assert!(config_error("[X].").contains("no variables"));
        assert!(config_error("[\"open].").contains("no closing quotation"));
        assert!(config_error(&format!("{}.", "[".repeat(500))).contains("nested"));
        assert!(config_error("[a b].").contains("expected ',', '|' or ']'"));
    }

    #[test]
    fn start_erl_data_must_be_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("start_erl.data");
        assert!(read_start_erl_data(&path).unwrap().is_none());
        fs::write(&path, "13.1.5 0.1.0\n").unwrap();
        assert_eq!(
            read_start_erl_data(&path).unwrap().as_deref(),
            Some("13.1.5 0.1.0\n")
        );
        fs::write(&path, b"\x00\x01\x02binary").unwrap();
        let err = read_start_erl_data(&path).unwrap_err().to_string();
        assert!(err.contains("not text") && err.contains("9 bytes"), "{err}");
        fs::write(&path, b"\xff\xfe").unwrap();
        assert!(read_start_erl_data(&path).is_err());
    }

    #[test]
    fn an_erts_mismatch_names_both_versions() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("releases/start_erl.data");
        assert!(
            check_erts_named(dir.path(), "13.1.5", &file).is_ok(),
            "no ERTS at all"
        );
        fs::create_dir(dir.path().join("erts-13.1.5")).unwrap();
        assert!(check_erts_named(dir.path(), "13.1.5", &file).is_ok());
        let err = check_erts_named(dir.path(), "99.9", &file)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ERTS 99.9") && err.contains("erts-13.1.5"), "{err}");
    }
}
