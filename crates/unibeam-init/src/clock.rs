//! Wall clock and entropy, both needed before the BEAM starts: TLS checks
//! dates, and crypto must not block on an uninitialised random pool.

use crate::log;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ClockError {
    #[error("/dev/rtc0")]
    Open(#[source] std::io::Error),
    #[error("RTC_RD_TIME")]
    Read(#[source] std::io::Error),
}

/// 2020-01-01: any clock before this was never set.
const PLAUSIBLE_EPOCH_SECS: u64 = 1_577_836_800;
/// `_IOR('p', 0x09, struct rtc_time)`.
const RTC_RD_TIME: libc::c_ulong = 0x8024_7009;

/// `struct rtc_time` from linux/rtc.h.
#[repr(C)]
#[derive(Default)]
struct RtcTime {
    sec: libc::c_int,
    min: libc::c_int,
    hour: libc::c_int,
    mday: libc::c_int,
    mon: libc::c_int,
    year: libc::c_int,
    wday: libc::c_int,
    yday: libc::c_int,
    isdst: libc::c_int,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// days_from_civil).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn read_rtc() -> Result<i64, ClockError> {
    let rtc = std::fs::File::open("/dev/rtc0").map_err(ClockError::Open)?;
    let mut t = RtcTime::default();
    // SAFETY: RTC_RD_TIME fills exactly one struct rtc_time, which `t` is.
    if unsafe { libc::ioctl(rtc.as_raw_fd(), RTC_RD_TIME, &mut t as *mut RtcTime) } != 0 {
        return Err(ClockError::Read(std::io::Error::last_os_error()));
    }
    let days = days_from_civil(i64::from(t.year) + 1900, i64::from(t.mon) + 1, i64::from(t.mday));
    Ok(days * 86_400 + i64::from(t.hour) * 3600 + i64::from(t.min) * 60 + i64::from(t.sec))
}

/// The kernel normally sets the clock from the RTC (RTC_HCTOSYS); a kernel
/// without that option leaves 1970, so init sets it.
pub fn ensure_wall_clock() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    if now >= PLAUSIBLE_EPOCH_SECS {
        return;
    }
    match read_rtc() {
        Ok(secs) => {
            let ts = libc::timespec {
                tv_sec: secs,
                tv_nsec: 0,
            };
            // SAFETY: clock_settime reads one timespec we own.
            if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } == 0 {
                log!("clock set from the RTC");
            }
        }
        Err(e) => log!("warning: clock not set: {}", log::chain(&e)),
    }
}

/// Waits until getrandom() no longer blocks, so `crypto` and `ssl` start
/// at once. RDRAND and virtio-rng make this immediate in practice.
pub fn wait_for_entropy(limit: Duration) {
    let start = Instant::now();
    let mut byte = [0u8; 1];
    loop {
        // SAFETY: getrandom writes at most 1 byte into `byte`.
        let n = unsafe { libc::getrandom(byte.as_mut_ptr().cast(), 1, libc::GRND_NONBLOCK) };
        if n == 1 {
            break;
        }
        if start.elapsed() > limit {
            log!("warning: the random pool is still not ready after {limit:?}");
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if start.elapsed() > Duration::from_millis(50) {
        log!("entropy ready after {:?}", start.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_to_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2026, 11, 27) * 86_400, 1_795_737_600);
    }
}
