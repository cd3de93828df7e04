//! Strips `.beam` files down to the chunks the runtime uses, like
//! `beam_lib:strip/1`. Debian's OTP ships debug info (`Dbgi`) that is often
//! larger than the code itself.
//!
//! Our own IFF walker: no crate reads BEAM files, and the format is a flat
//! list of `id, size, data` chunks.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum BeamError {
    #[error("not a BEAM file (no FOR1/BEAM header)")]
    NotBeam,
    #[error("corrupt gzip-compressed BEAM file")]
    BadGzip(#[source] std::io::Error),
    #[error("truncated BEAM file: chunk {chunk} runs past the end")]
    Truncated { chunk: String },
}

/// What `beam_lib:strip/1` keeps, less `Line`, plus `Attr` (module
/// attributes such as `vsn` and `behaviour`, which release handling reads)
/// and `CInf`.
const KEPT: &[&[u8; 4]] = &[
    b"Atom", b"AtU8", b"Code", b"StrT", b"ImpT", b"ExpT", b"FunT", b"LitT", b"Type", b"Meta", b"Attr",
    b"CInf",
];
/// File and line numbers for stack traces: not needed to run, about 3% of
/// the compressed OTP libraries, and worth their bytes in the user's code.
const LINE: &[u8; 4] = b"Line";
const LITERALS: &[u8; 4] = b"LitT";

/// Which optional chunks stripping keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keep {
    pub lines: bool,
}

fn padded(len: usize) -> usize {
    (len + 3) & !3
}

/// Undoes the per-file gzip that relx applies in prod mode. The loader
/// reads both forms, and one zstd pass over the whole layer compresses
/// far better than hundreds of small gzip streams.
pub fn decompress(data: &[u8]) -> Result<Vec<u8>, BeamError> {
    if !data.starts_with(&[0x1f, 0x8b]) {
        return Ok(data.to_vec());
    }
    let mut out = Vec::with_capacity(data.len() * 3);
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(data), &mut out)
        .map_err(BeamError::BadGzip)?;
    Ok(out)
}

/// A chunk's id and data (padding left out).
pub type Chunk<'a> = ([u8; 4], &'a [u8]);

/// The file's chunks in order.
pub fn chunks(data: &[u8]) -> Result<Vec<Chunk<'_>>, BeamError> {
    if data.len() < 12 || &data[0..4] != b"FOR1" || &data[8..12] != b"BEAM" {
        return Err(BeamError::NotBeam);
    }
    let mut out = Vec::new();
    let mut rest = &data[12..];
    while rest.len() >= 8 {
        let id: [u8; 4] = rest[0..4].try_into().expect("4 bytes");
        let size = u32::from_be_bytes(rest[4..8].try_into().expect("4 bytes")) as usize;
        if rest.len() < 8 + size {
            return Err(BeamError::Truncated {
                chunk: String::from_utf8_lossy(&id).into_owned(),
            });
        }
        out.push((id, &rest[8..8 + size]));
        rest = &rest[(8 + padded(size)).min(rest.len())..];
    }
    Ok(out)
}

/// Returns the file with only the kept chunks, its literal table stored
/// rather than deflated (see [`store_literals`]).
pub fn strip(data: &[u8], keep: Keep) -> Result<Vec<u8>, BeamError> {
    let mut body = Vec::with_capacity(data.len());
    body.extend_from_slice(b"BEAM");
    for (id, data) in chunks(data)? {
        let stored = if &id == LITERALS {
            store_literals(data)
        } else {
            None
        };
        let chunk = stored.as_deref().unwrap_or(data);
        if KEPT.contains(&&id) || (keep.lines && &id == LINE) {
            body.extend_from_slice(&id);
            body.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
            body.extend_from_slice(chunk);
            body.resize(padded(body.len()), 0);
        }
    }
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(b"FOR1");
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Re-encodes a `LitT` chunk (its unpacked size, then a zlib stream) with
/// stored deflate blocks. The loader inflates either form the same way, and
/// the layer's xz compresses plain literals far better than zlib output:
/// 50 KB less for hello, at the price of ~0.3 MB more unpacked. `None`
/// leaves a chunk that is not the usual zlib form untouched.
fn store_literals(chunk: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write;
    let (size, deflated) = chunk.split_at_checked(4)?;
    let size = u32::from_be_bytes(size.try_into().ok()?) as usize;
    let plain = inflate_literals(deflated, size)?;
    if plain.len() != size {
        return None;
    }
    let mut out = chunk[..4].to_vec();
    let mut encoder = flate2::write::ZlibEncoder::new(&mut out, flate2::Compression::none());
    encoder.write_all(&plain).ok()?;
    encoder.finish().ok()?;
    Some(out)
}

/// zlib packs at most about 1032 bytes into one.
const ZLIB_MAX_RATIO: usize = 1032;

/// A literal table's zlib stream, which claims `size` bytes unpacked: the
/// claim reserves no more than the stream can hold, and at most one byte
/// past it is unpacked (enough to tell a longer stream).
fn inflate_literals(deflated: &[u8], size: usize) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut plain = Vec::with_capacity(size.min(deflated.len().saturating_mul(ZLIB_MAX_RATIO)));
    flate2::read::ZlibDecoder::new(deflated)
        .take(size as u64 + 1)
        .read_to_end(&mut plain)
        .ok()?;
    Some(plain)
}

/// What a module names and holds: enough to tell which functions of other
/// modules it calls and which constants it carries, without its code.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tables {
    /// The atom table; `atoms[0]` is the module's own name.
    pub atoms: Vec<String>,
    /// Imported functions as module, function, arity.
    pub imports: Vec<(String, String, u32)>,
    /// Each literal in the external term format, version byte included.
    pub literals: Vec<Vec<u8>>,
}

/// Reads the atom, import and literal tables of a (decompressed) `.beam`
/// file. Tables it cannot read come back empty: they only inform a guess.
pub fn tables(data: &[u8]) -> Result<Tables, BeamError> {
    let mut t = Tables::default();
    let all = chunks(data)?;
    for (id, chunk) in &all {
        match id {
            b"AtU8" | b"Atom" => t.atoms = read_atoms(chunk).unwrap_or_default(),
            b"LitT" => t.literals = read_literals(chunk).unwrap_or_default(),
            _ => {}
        }
    }
    if let Some((_, chunk)) = all.iter().find(|(id, _)| id == b"ImpT") {
        t.imports = read_imports(chunk, &t.atoms).unwrap_or_default();
    }
    Ok(t)
}

fn be_u32(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

/// A count, then each atom's length and bytes. OTP 26 and later write a
/// negated count and compact-term lengths (`(len << 4)` below 16, two
/// bytes up to 2047); OTP 25 one length byte.
fn read_atoms(chunk: &[u8]) -> Option<Vec<String>> {
    let count = be_u32(chunk, 0)? as i32;
    let compact = count < 0;
    let mut at = 4;
    let mut atoms = Vec::new();
    for _ in 0..count.unsigned_abs() {
        let first = *chunk.get(at)? as usize;
        let len = match compact {
            false => first,
            true if first & 0x08 == 0 => first >> 4,
            true => ((first & 0xe0) << 3) | *chunk.get(at + 1)? as usize,
        };
        at += if compact && first & 0x08 != 0 { 2 } else { 1 };
        atoms.push(String::from_utf8_lossy(chunk.get(at..at + len)?).into_owned());
        at += len;
    }
    Some(atoms)
}

/// A count, then (module, function, arity) triples; atoms are 1-based.
fn read_imports(chunk: &[u8], atoms: &[String]) -> Option<Vec<(String, String, u32)>> {
    let count = be_u32(chunk, 0)? as usize;
    let atom = |i: u32| atoms.get((i as usize).checked_sub(1)?).cloned();
    (0..count)
        .map(|i| {
            let at = 4 + i * 12;
            let (m, f, a) = (be_u32(chunk, at)?, be_u32(chunk, at + 4)?, be_u32(chunk, at + 8)?);
            Some((atom(m)?, atom(f)?, a))
        })
        .collect()
}

/// The unpacked size then a zlib stream (a size of 0: no compression),
/// holding a count and each literal's size and bytes.
fn read_literals(chunk: &[u8]) -> Option<Vec<Vec<u8>>> {
    let size = be_u32(chunk, 0)? as usize;
    let plain = if size == 0 {
        chunk[4..].to_vec()
    } else {
        inflate_literals(&chunk[4..], size)?
    };
    let count = be_u32(&plain, 0)? as usize;
    let mut at = 4;
    let mut literals = Vec::new();
    for _ in 0..count {
        let len = be_u32(&plain, at)? as usize;
        literals.push(plain.get(at + 4..at + 4 + len)?.to_vec());
        at += 4 + len;
    }
    Some(literals)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beam(chunks: &[(&[u8; 4], &[u8])]) -> Vec<u8> {
        let mut body = b"BEAM".to_vec();
        for (id, data) in chunks {
            body.extend_from_slice(*id);
            body.extend_from_slice(&(data.len() as u32).to_be_bytes());
            body.extend_from_slice(data);
            body.resize(padded(body.len()), 0);
        }
        let mut out = b"FOR1".to_vec();
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn drops_debug_info_and_keeps_code() {
        let input = beam(&[
            (b"AtU8", b"abc"),
            (b"Dbgi", &[7; 100]),
            (b"Code", b"12345"),
            (b"Docs", b"x"),
        ]);
        let out = strip(&input, DROP_LINES).unwrap();
        assert_eq!(out, beam(&[(b"AtU8", b"abc"), (b"Code", b"12345")]));
    }

    const DROP_LINES: Keep = Keep { lines: false };

    #[test]
    fn line_numbers_stay_only_when_asked() {
        let input = beam(&[(b"Code", b"12345"), (b"Line", b"lines")]);
        assert_eq!(strip(&input, DROP_LINES).unwrap(), beam(&[(b"Code", b"12345")]));
        assert_eq!(strip(&input, Keep { lines: true }).unwrap(), input);
    }

    fn literal_chunk(plain: &[u8], level: flate2::Compression) -> Vec<u8> {
        use std::io::Write;
        let mut chunk = (plain.len() as u32).to_be_bytes().to_vec();
        let mut z = flate2::write::ZlibEncoder::new(&mut chunk, level);
        z.write_all(plain).unwrap();
        z.finish().unwrap();
        chunk
    }

    /// The largest allocation each thread asked for: tells memory reserved
    /// by what a file claims from memory its data fills. It applies to
    /// every test of this crate, and only tracks.
    struct Tracking;

    thread_local! {
        static LARGEST: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    // SAFETY: every call is forwarded to the system allocator as it came;
    // the thread-local is a const-initialised Cell, which never allocates.
    unsafe impl std::alloc::GlobalAlloc for Tracking {
        unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
            LARGEST.with(|l| l.set(l.get().max(layout.size())));
            // SAFETY: the caller's contract, passed on.
            unsafe { std::alloc::System.alloc(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
            // SAFETY: the caller's contract, passed on.
            unsafe { std::alloc::System.dealloc(ptr, layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
            LARGEST.with(|l| l.set(l.get().max(new_size)));
            // SAFETY: the caller's contract, passed on.
            unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
        }
    }

    #[global_allocator]
    static ALLOCATOR: Tracking = Tracking;

    /// Found by the `beam` fuzz target: a literal table that claims 4 GiB
    /// unpacked made `tables` and `strip` reserve 4 GiB, which aborts the
    /// build where memory is not overcommitted.
    #[test]
    fn a_literal_table_claiming_gigabytes_reserves_no_gigabytes() {
        let mut chunk = 0xffff_fff0u32.to_be_bytes().to_vec();
        chunk.extend_from_slice(&literal_chunk(&[0, 0, 0, 0], flate2::Compression::best())[4..]);
        let input = beam(&[
            (b"AtU8", &[0xff, 0xff, 0xff, 0xff, 0x30, b'a', b'b', b'c']),
            (b"LitT", &chunk),
        ]);
        LARGEST.with(|l| l.set(0));
        let t = tables(&input).unwrap();
        assert_eq!(t.atoms, ["abc"]);
        assert_eq!(strip(&input, Keep { lines: false }).unwrap().len(), input.len());
        let largest = LARGEST.with(|l| l.get());
        assert!(
            largest < 1 << 20,
            "reserved {largest} bytes for a {}-byte file",
            input.len()
        );
    }

    #[test]
    fn literals_are_stored_not_deflated() {
        let plain = b"literal literal literal literal".repeat(10);
        let input = beam(&[(b"LitT", &literal_chunk(&plain, flate2::Compression::best()))]);
        let stored = literal_chunk(&plain, flate2::Compression::none());
        assert_eq!(strip(&input, DROP_LINES).unwrap(), beam(&[(b"LitT", &stored)]));
        // The stored form still inflates to the same literals.
        let mut inflated = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::ZlibDecoder::new(&stored[4..]), &mut inflated).unwrap();
        assert_eq!(inflated, plain);
    }

    #[test]
    fn unusual_literal_chunks_are_left_alone() {
        let mut wrong_size = literal_chunk(b"abc", flate2::Compression::best());
        wrong_size[3] = 9;
        for chunk in [wrong_size, vec![0, 0, 0, 3, b'a', b'b', b'c'], vec![1]] {
            let input = beam(&[(b"LitT", &chunk)]);
            assert_eq!(strip(&input, DROP_LINES).unwrap(), input);
        }
    }

    #[test]
    fn rejects_non_beam_and_truncated_input() {
        assert!(matches!(
            strip(b"hello world!", DROP_LINES),
            Err(BeamError::NotBeam)
        ));
        let mut input = beam(&[(b"Code", &[1; 40])]);
        input.truncate(30);
        assert!(matches!(
            strip(&input, DROP_LINES),
            Err(BeamError::Truncated { .. })
        ));
    }

    #[test]
    fn gzip_beams_are_inflated() {
        use std::io::Write;
        let plain = beam(&[(b"Code", b"1234")]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&plain).unwrap();
        assert_eq!(decompress(&gz.finish().unwrap()).unwrap(), plain);
        assert_eq!(decompress(&plain).unwrap(), plain);
        assert!(matches!(
            decompress(&[0x1f, 0x8b, 8, 0, 1]),
            Err(BeamError::BadGzip(_))
        ));
    }

    #[test]
    fn real_otp_module_shrinks_and_keeps_its_chunks() {
        // Erlang is a build dependency (make deps, CI): without it this
        // test fails rather than passing without checking anything.
        let path = std::process::Command::new("erl")
            .args([
                "-noshell",
                "-eval",
                "io:format(\"~s\", [code:which(lists)]), halt().",
            ])
            .output()
            .expect("erl runs (apt-get install erlang-base, or make deps)");
        assert!(path.status.success(), "erl failed: {path:?}");
        let data = std::fs::read(String::from_utf8_lossy(&path.stdout).trim()).unwrap();
        let out = strip(&data, DROP_LINES).unwrap();
        assert!(out.len() < data.len());
        assert!(out.windows(4).any(|w| w == b"LitT"));
        assert!(!out.windows(4).any(|w| w == b"Line"));
        assert!(out.windows(4).any(|w| w == b"Code"));
        assert!(!out.windows(4).any(|w| w == b"Dbgi"));
    }
}
