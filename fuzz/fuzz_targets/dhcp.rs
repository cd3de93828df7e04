//! init's DHCP client: replies (OFFER, ACK, NAK) as they come off the wire,
//! and MAC addresses as sysfs and the boot spec give them. init is a binary
//! crate, so its module is compiled in here as it is.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../crates/unibeam-init/src/dhcp.rs"]
mod dhcp;

fuzz_target!(|data: &[u8]| {
    // The transaction id the replies carry (bytes 4..8), so that the
    // options get read: an id that does not match ends the parse early.
    let xid = data
        .get(4..8)
        .map_or(0, |b| u32::from_be_bytes(b.try_into().unwrap()));
    if let Some((_, lease)) = dhcp::parse_reply(data, xid) {
        assert!(lease.prefix_len <= 32);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = dhcp::parse_mac(text);
    }
});
