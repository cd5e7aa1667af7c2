//! Guest exit codes: the one table of their meanings, and how a hypervisor's
//! process status maps back to the code the guest passed to `shutdown`.
//!
//! QEMU's `isa-debug-exit` makes QEMU exit with `(code << 1) | 1`, but QEMU
//! also exits 1 on its own errors and 0 on a reset or triple fault (with
//! `-no-reboot`). Status 1 is therefore the guest's code 0 only when the
//! console also shows `rtedge: shutdown code=0`. uhyve exits with the code.

use std::fmt;

/// A code the guest passed to `shutdown(code)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GuestCode(pub u8);

/// The largest code that survives QEMU's `(code << 1) | 1` in an 8-bit status.
pub const MAX_PORTABLE_CODE: u8 = 127;

/// First code of the CPU exception range: code = `EXCEPTION_BASE + vector`.
const EXCEPTION_BASE: u8 = 32;

/// The fixed codes (below the exception range).
const FIXED: &[(u8, &str)] = &[
    (0, "success"),
    (1, "kernel tests failed"),
    (2, "panic"),
    (3, "stack overflow (guard page hit)"),
    (4, "double fault"),
    (5, "out of memory"),
    (6, "boot failure"),
];

/// CPU exception vectors 0..=31 (Intel SDM vol. 3, table 6-1); `None` = reserved.
const VECTORS: [Option<&str>; 32] = [
    Some("#DE divide error"),
    Some("#DB debug"),
    Some("NMI"),
    Some("#BP breakpoint"),
    Some("#OF overflow"),
    Some("#BR bound range exceeded"),
    Some("#UD invalid opcode"),
    Some("#NM device not available"),
    Some("#DF double fault"),
    Some("coprocessor segment overrun"),
    Some("#TS invalid TSS"),
    Some("#NP segment not present"),
    Some("#SS stack-segment fault"),
    Some("#GP general protection"),
    Some("#PF page fault"),
    None,
    Some("#MF x87 floating-point error"),
    Some("#AC alignment check"),
    Some("#MC machine check"),
    Some("#XM SIMD floating-point"),
    Some("#VE virtualization exception"),
    Some("#CP control protection"),
    None,
    None,
    None,
    None,
    None,
    None,
    Some("#HV hypervisor injection"),
    Some("#VC VMM communication"),
    Some("#SX security exception"),
    None,
];

impl GuestCode {
    /// The symbolic name of the code, e.g. `"CPU exception 14: #PF page fault"`.
    pub fn name(self) -> String {
        let code = self.0;
        if let Some((_, name)) = FIXED.iter().find(|(fixed, _)| *fixed == code) {
            return (*name).to_string();
        }
        match code.checked_sub(EXCEPTION_BASE).map(usize::from) {
            Some(vector) if vector < VECTORS.len() => match VECTORS[vector] {
                Some(name) => format!("CPU exception {vector}: {name}"),
                None => format!("CPU exception {vector} (reserved vector)"),
            },
            _ if code <= MAX_PORTABLE_CODE => "application code".to_string(),
            _ => "unknown code".to_string(),
        }
    }
}

impl fmt::Display for GuestCode {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} ({})", self.0, self.name())
    }
}

/// How a hypervisor reports the guest's code in its own exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitConvention {
    /// `isa-debug-exit`: status `(code << 1) | 1`.
    Qemu,
    /// The exit hypercall: status `code`.
    Uhyve,
}

/// How the hypervisor process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostStatus {
    Exited(i32),
    Signaled(i32),
}

impl HostStatus {
    pub fn from_std(status: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => HostStatus::Exited(code),
            (None, Some(signal)) => HostStatus::Signaled(signal),
            // Neither exited nor signalled cannot come out of wait(); keep it visible.
            (None, None) => HostStatus::Exited(-1),
        }
    }
}

impl fmt::Display for HostStatus {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostStatus::Exited(code) => write!(formatter, "exit status {code}"),
            HostStatus::Signaled(signal) => write!(formatter, "killed by signal {signal}"),
        }
    }
}

/// What a hypervisor's exit status says about the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The guest shut down with this code.
    Guest(GuestCode),
    /// QEMU exited 0: the guest reset or triple-faulted (`-no-reboot`), or
    /// the user quit QEMU.
    QemuReset,
    /// QEMU exited 1 without `rtedge: shutdown code=0` on the console.
    QemuStatusOneUnconfirmed,
    /// A status no guest code maps to (a hypervisor error).
    HypervisorError(i32),
    /// The hypervisor was killed by a signal.
    Signaled(i32),
}

impl Outcome {
    pub fn guest_code(&self) -> Option<GuestCode> {
        match self {
            Outcome::Guest(code) => Some(*code),
            _ => None,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Guest(code) => write!(formatter, "guest code {code}"),
            Outcome::QemuReset => {
                formatter.write_str("QEMU exited 0 without a guest code: reset or triple fault (-no-reboot), or quit by the user")
            }
            Outcome::QemuStatusOneUnconfirmed => formatter.write_str(
                "QEMU exited 1 but the console has no `rtedge: shutdown code=0` line: \
                 either QEMU failed (see its stderr) or the guest exited 0 without announcing it",
            ),
            Outcome::HypervisorError(status) => {
                write!(formatter, "hypervisor error: exit status {status} maps to no guest code")
            }
            Outcome::Signaled(signal) => write!(formatter, "hypervisor killed by signal {signal}"),
        }
    }
}

/// Maps a hypervisor's exit status to what the guest did. `announced` is the
/// code of the last `rtedge: shutdown code=N` line on the console, if any.
pub fn decode(convention: ExitConvention, status: HostStatus, announced: Option<u8>) -> Outcome {
    let code = match status {
        HostStatus::Signaled(signal) => return Outcome::Signaled(signal),
        HostStatus::Exited(code) => code,
    };
    match convention {
        ExitConvention::Qemu => match code {
            0 => Outcome::QemuReset,
            1 if announced == Some(0) => Outcome::Guest(GuestCode(0)),
            1 => Outcome::QemuStatusOneUnconfirmed,
            3..=255 if code % 2 == 1 => match u8::try_from(code >> 1) {
                Ok(guest) => Outcome::Guest(GuestCode(guest)),
                Err(_) => Outcome::HypervisorError(code),
            },
            _ => Outcome::HypervisorError(code),
        },
        ExitConvention::Uhyve => match u8::try_from(code) {
            Ok(guest) => Outcome::Guest(GuestCode(guest)),
            Err(_) => Outcome::HypervisorError(code),
        },
    }
}

/// A warning when the console announced a different code than the status carries.
pub fn announcement_mismatch(outcome: &Outcome, announced: Option<u8>) -> Option<String> {
    match (outcome.guest_code(), announced) {
        (Some(code), Some(said)) if code.0 != said => {
            Some(format!("the console announced `rtedge: shutdown code={said}` but the exit status carries {code}"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_codes_have_their_names() {
        let names: Vec<String> = (0..=6).map(|code| GuestCode(code).name()).collect();
        assert_eq!(
            names,
            ["success", "kernel tests failed", "panic", "stack overflow (guard page hit)", "double fault", "out of memory", "boot failure",]
        );
    }

    #[test]
    fn exception_codes_name_the_vector() {
        assert_eq!(GuestCode(32).name(), "CPU exception 0: #DE divide error");
        assert_eq!(GuestCode(38).name(), "CPU exception 6: #UD invalid opcode");
        assert_eq!(GuestCode(45).name(), "CPU exception 13: #GP general protection");
        assert_eq!(GuestCode(46).name(), "CPU exception 14: #PF page fault");
        assert_eq!(GuestCode(47).name(), "CPU exception 15 (reserved vector)");
        assert_eq!(GuestCode(63).name(), "CPU exception 31 (reserved vector)");
    }

    #[test]
    fn codes_outside_the_table_are_unknown() {
        assert_eq!(GuestCode(7).name(), "application code");
        assert_eq!(GuestCode(31).name(), "application code");
        assert_eq!(GuestCode(64).name(), "application code");
        assert_eq!(GuestCode(127).name(), "application code");
        assert_eq!(GuestCode(128).name(), "unknown code");
        assert_eq!(GuestCode(255).name(), "unknown code");
    }

    #[test]
    fn display_shows_number_and_name() {
        assert_eq!(GuestCode(46).to_string(), "46 (CPU exception 14: #PF page fault)");
    }

    #[test]
    fn qemu_status_is_code_shifted_left_plus_one() {
        let qemu = |status| decode(ExitConvention::Qemu, HostStatus::Exited(status), None);
        assert_eq!(qemu(3), Outcome::Guest(GuestCode(1)));
        assert_eq!(qemu(5), Outcome::Guest(GuestCode(2)));
        assert_eq!(qemu(93), Outcome::Guest(GuestCode(46)));
        assert_eq!(qemu(255), Outcome::Guest(GuestCode(127)));
    }

    #[test]
    fn qemu_status_one_needs_the_console_announcement() {
        let status = HostStatus::Exited(1);
        assert_eq!(decode(ExitConvention::Qemu, status, Some(0)), Outcome::Guest(GuestCode(0)));
        assert_eq!(decode(ExitConvention::Qemu, status, None), Outcome::QemuStatusOneUnconfirmed);
        assert_eq!(decode(ExitConvention::Qemu, status, Some(3)), Outcome::QemuStatusOneUnconfirmed);
    }

    #[test]
    fn qemu_zero_and_even_statuses_carry_no_guest_code() {
        let qemu = |status| decode(ExitConvention::Qemu, HostStatus::Exited(status), Some(0));
        assert_eq!(qemu(0), Outcome::QemuReset);
        assert_eq!(qemu(2), Outcome::HypervisorError(2));
        assert_eq!(qemu(256), Outcome::HypervisorError(256));
        assert_eq!(qemu(-1), Outcome::HypervisorError(-1));
    }

    #[test]
    fn uhyve_status_is_the_code() {
        let uhyve = |status| decode(ExitConvention::Uhyve, HostStatus::Exited(status), None);
        assert_eq!(uhyve(0), Outcome::Guest(GuestCode(0)));
        assert_eq!(uhyve(46), Outcome::Guest(GuestCode(46)));
        assert_eq!(uhyve(300), Outcome::HypervisorError(300));
    }

    #[test]
    fn signals_are_reported_as_such() {
        for convention in [ExitConvention::Qemu, ExitConvention::Uhyve] {
            assert_eq!(decode(convention, HostStatus::Signaled(9), Some(0)), Outcome::Signaled(9));
        }
    }

    #[test]
    fn mismatch_between_status_and_announcement_is_reported() {
        let outcome = Outcome::Guest(GuestCode(2));
        assert_eq!(announcement_mismatch(&outcome, Some(2)), None);
        assert_eq!(announcement_mismatch(&outcome, None), None);
        assert_eq!(
            announcement_mismatch(&outcome, Some(0)).as_deref(),
            Some("the console announced `rtedge: shutdown code=0` but the exit status carries 2 (panic)")
        );
    }
}
