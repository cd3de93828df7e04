use super::*;

/// A stream shaped like QEMU's: RAM-like bytes (with a decoy `timer` id
/// string that no full-section byte precedes), the timer section, more
/// device state.
fn stream(ticks: i64, clock: i64) -> (Vec<u8>, u64) {
    let mut s = vec![0xAAu8; 70_000];
    s.extend_from_slice(&[0x00, 0, 0, 0, 9]);
    s.extend_from_slice(TIMER_IDSTR);
    s.extend_from_slice(&[0x55; 100]);
    s.extend_from_slice(&[SECTION_FULL, 0, 0, 0, 2]);
    s.extend_from_slice(TIMER_IDSTR);
    let fields = s.len() as u64;
    s.extend_from_slice(&ticks.to_be_bytes());
    s.extend_from_slice(&[0; 8]);
    s.extend_from_slice(&clock.to_be_bytes());
    s.extend_from_slice(&[0x77; 50_000]);
    (s, fields)
}

#[test]
fn the_timer_section_is_found_across_piece_boundaries_and_decoys_are_not() {
    let (s, fields) = stream(1, 2);
    for piece in [1, 7, 13, 4096, 1 << 20] {
        let mut finder = TimerFinder::default();
        for chunk in s.chunks(piece) {
            finder.feed(chunk);
        }
        assert_eq!(finder.found, Some(fields), "pieces of {piece}");
        assert_eq!(finder.seen, s.len() as u64);
    }
}

#[test]
fn a_written_stream_reads_back_with_its_clocks_moved_on() {
    let dir = tempfile::tempdir().unwrap();
    let (s, fields) = stream(5_000_000, 3_000_000_000);
    let info = write(&s[..], dir.path(), Compression::Fast).unwrap();
    assert_eq!(info.timer_fields, Some(fields));
    assert_eq!(info.stream_bytes, s.len() as u64);
    assert!(verify(dir.path(), &info).unwrap());
    assert_eq!(read_info(dir.path()).unwrap(), info);

    let mut plain = Vec::new();
    read(dir.path(), &info, None, &mut plain).unwrap();
    assert_eq!(plain, s, "without an advance the stream is as saved");

    let advance = ClockAdvance {
        nanos: 10_000_000_000,
        tsc_khz: 2_000_000,
    };
    let mut moved = Vec::new();
    read(dir.path(), &info, Some(advance), &mut moved).unwrap();
    let f = fields as usize;
    let field = |at: usize| i64::from_be_bytes(moved[at..at + 8].try_into().unwrap());
    assert_eq!(field(f), 5_000_000 + 20_000_000_000, "10 s of a 2 GHz TSC");
    assert_eq!(field(f + 16), 13_000_000_000);
    assert_eq!(moved[..f], s[..f]);
    assert_eq!(moved[f + 24..], s[f + 24..]);
}

#[test]
fn a_truncated_or_flipped_state_file_fails_verification() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = stream(1, 1);
    let info = write(&s[..], dir.path(), Compression::Small).unwrap();
    let path = dir.path().join(STATE_FILE);
    let mut bytes = fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    fs::write(&path, &bytes).unwrap();
    assert!(!verify(dir.path(), &info).unwrap());
    fs::write(&path, &bytes[..mid]).unwrap();
    assert!(!verify(dir.path(), &info).unwrap());
    assert!(!dir.path().join(format!("{STATE_FILE}.partial")).exists());
}

#[test]
fn compression_names_round_trip_and_others_are_refused() {
    for c in [Compression::Fast, Compression::Small] {
        assert_eq!(Compression::from_arg(c.as_arg()), Some(c));
    }
    assert_eq!(Compression::from_arg("9"), None);
    assert!(Compression::Small.level() > Compression::Fast.level());
}
