//! The CMOS real-time clock (MC146818), for the wall-clock time at boot.

use crate::cpu;

fn read(register: u8) -> u8 {
    // SAFETY: ports 0x70/0x71 are the CMOS index/data pair; NMI stays enabled
    // (bit 7 clear) and only registers below 0x40 are read.
    unsafe {
        cpu::outb(0x70, register & 0x7f);
        cpu::inb(0x71)
    }
}

fn from_bcd(value: u8) -> u8 {
    (value & 0x0f) + (value >> 4) * 10
}

/// Days from 1970-01-01 to the given civil date (proleptic Gregorian).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Seconds since the Unix epoch from the RTC, or `None` if no RTC answers
/// (every register reads 0xff) or the values make no sense.
pub fn read_unix_seconds() -> Option<i64> {
    // No RTC (QEMU microvm under KVM has none): every port reads 0xff,
    // which would look like an update in progress for ever. Each read is an
    // exit to the hypervisor, so find out with one read, not a million.
    if read(0x0a) == 0xff {
        return None;
    }
    // Wait (bounded) for an update cycle to finish (it lasts under 2 ms; a
    // spin is two port accesses, a microsecond or more), then read until
    // two snapshots agree.
    let mut spins = 0;
    while read(0x0a) & 0x80 != 0 {
        spins += 1;
        if spins > 10_000 {
            return None;
        }
        cpu::pause();
    }
    let snapshot = || [read(0x00), read(0x02), read(0x04), read(0x07), read(0x08), read(0x09), read(0x32)];
    let mut values = snapshot();
    for _ in 0..5 {
        let again = snapshot();
        if again == values {
            break;
        }
        values = again;
    }
    if values.iter().all(|&v| v == 0xff) {
        return None;
    }
    let status_b = read(0x0b);
    let binary = status_b & 0x04 != 0;
    let twenty_four_hour = status_b & 0x02 != 0;
    let decode = |v: u8| if binary { v } else { from_bcd(v) };
    let [second, minute, hour_raw, day, month, year, century] = values;
    let pm = hour_raw & 0x80 != 0;
    let mut hour = decode(hour_raw & 0x7f);
    if !twenty_four_hour {
        hour %= 12;
        if pm {
            hour += 12;
        }
    }
    let century = match decode(century) {
        19..=21 => i64::from(decode(century)),
        _ => 20,
    };
    let year = century * 100 + i64::from(decode(year));
    let (second, minute, day, month) = (decode(second), decode(minute), decode(day), decode(month));
    if second > 59 || minute > 59 || hour > 23 || !(1..=31).contains(&day) || !(1..=12).contains(&month) {
        return None;
    }
    let days = days_from_civil(year, u32::from(month), u32::from(day));
    Some(days * 86_400 + i64::from(hour) * 3_600 + i64::from(minute) * 60 + i64::from(second))
}
