//! Reading the ACPI tables that power management needs, as bytes: the FADT
//! (fixed hardware: PM1 event and control blocks, the SCI, the SMI command
//! port, the reset register, and the sleep registers of hardware-reduced
//! machines) and the `\_S5` package in the DSDT, whose first element is the
//! sleep type that powers the machine off.
//!
//! Full AML needs an interpreter; the `\_S5` object is, on every firmware
//! rtedge meets (QEMU's q35 and microvm builders, OVMF, SeaBIOS), a plain
//! `Name (_S5, Package () { a, b, .. })`, so a scan for the name followed by
//! a package of integer constants is what small kernels do. Every read is
//! bounds-checked; a malformed table gives `None`, never a panic.

/// An ACPI Generic Address Structure (GAS): where a register lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenericAddress {
    pub space: AddressSpace,
    /// Register width in bits (0: not given, use the access size).
    pub bit_width: u8,
    pub bit_offset: u8,
    /// 1 = byte, 2 = word, 3 = dword, 4 = qword; 0 = undefined.
    pub access_size: u8,
    pub address: u64,
}

/// The address space of a [`GenericAddress`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressSpace {
    Memory,
    Io,
    /// PCI configuration space and the rest: rtedge does not drive them.
    Other(u8),
}

impl GenericAddress {
    /// Parses the 12 bytes of a GAS; `None` if short or the address is 0.
    pub fn parse(bytes: &[u8]) -> Option<GenericAddress> {
        let bytes = bytes.get(..12)?;
        let address = u64::from_le_bytes(bytes[4..12].try_into().ok()?);
        if address == 0 {
            return None;
        }
        let space = match bytes[0] {
            0 => AddressSpace::Memory,
            1 => AddressSpace::Io,
            other => AddressSpace::Other(other),
        };
        Some(GenericAddress { space, bit_width: bytes[1], bit_offset: bytes[2], access_size: bytes[3], address })
    }

    /// The access width in bytes: from the access size, else the bit width.
    pub fn width_bytes(&self) -> u8 {
        match self.access_size {
            1 => 1,
            2 => 2,
            3 => 4,
            4 => 8,
            _ => match self.bit_width {
                0..=8 => 1,
                9..=16 => 2,
                17..=32 => 4,
                _ => 8,
            },
        }
    }
}

/// FADT flag: the reset register is supported.
pub const FLAG_RESET_REGISTER: u32 = 1 << 10;
/// FADT flag: hardware-reduced ACPI (no PM1 blocks, no SCI_EN; events come
/// from a generic event device, sleep through the sleep control register).
pub const FLAG_HARDWARE_REDUCED: u32 = 1 << 20;

/// PM1 status/enable bit of the power button (PWRBTN_STS / PWRBTN_EN).
pub const PM1_POWER_BUTTON: u16 = 1 << 8;
/// PM1 control: SCI_EN, set while the machine is in ACPI mode.
pub const PM1_CONTROL_SCI_ENABLE: u16 = 1;
/// PM1 control: SLP_EN, writing it enters the sleep state in SLP_TYP.
pub const PM1_CONTROL_SLEEP_ENABLE: u16 = 1 << 13;
/// Hardware-reduced sleep control register: SLP_EN.
pub const SLEEP_CONTROL_ENABLE: u8 = 1 << 5;

/// The PM1 control value that enters sleep type `sleep_type` (for S5: off),
/// keeping the other bits of `current` (SCI_EN among them).
pub fn pm1_sleep_value(current: u16, sleep_type: u8) -> u16 {
    (current & !(0b111 << 10)) | (u16::from(sleep_type & 0b111) << 10) | PM1_CONTROL_SLEEP_ENABLE
}

/// The sleep control register value of a hardware-reduced machine for
/// sleep type `sleep_type`.
pub fn sleep_control_value(sleep_type: u8) -> u8 {
    ((sleep_type & 0b111) << 2) | SLEEP_CONTROL_ENABLE
}

/// What the FADT says about power management.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fadt {
    pub revision: u8,
    pub flags: u32,
    /// The ISA interrupt (on PC machines) the SCI is wired to.
    pub sci_interrupt: u16,
    /// Port to write `acpi_enable` to for ACPI mode; 0: always in ACPI mode.
    pub smi_command: u32,
    pub acpi_enable: u8,
    pub pm1a_event: u32,
    pub pm1b_event: u32,
    pub pm1a_control: u32,
    pub pm1b_control: u32,
    pub pm1_event_length: u8,
    pub gpe0_block: u32,
    pub gpe0_block_length: u8,
    pub gpe1_block: u32,
    pub gpe1_block_length: u8,
    /// The reset register and the value that resets, when supported.
    pub reset: Option<(GenericAddress, u8)>,
    /// Physical address of the DSDT (X_DSDT when given, else DSDT).
    pub dsdt: u64,
    pub sleep_control: Option<GenericAddress>,
    pub sleep_status: Option<GenericAddress>,
}

fn u8_at(data: &[u8], offset: usize) -> Option<u8> {
    data.get(offset).copied()
}

fn u16_at(data: &[u8], offset: usize) -> Option<u16> {
    Some(u16::from_le_bytes(data.get(offset..offset + 2)?.try_into().ok()?))
}

fn u32_at(data: &[u8], offset: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(offset..offset + 4)?.try_into().ok()?))
}

fn u64_at(data: &[u8], offset: usize) -> Option<u64> {
    Some(u64::from_le_bytes(data.get(offset..offset + 8)?.try_into().ok()?))
}

impl Fadt {
    /// Parses a FADT (`FACP`) table, header included. Fields a short (old)
    /// table lacks read as absent.
    pub fn parse(table: &[u8]) -> Option<Fadt> {
        if table.get(..4)? != b"FACP" || table.len() < 116 {
            return None;
        }
        let flags = u32_at(table, 112)?;
        let reset = if flags & FLAG_RESET_REGISTER != 0 {
            table.get(116..128).and_then(GenericAddress::parse).zip(u8_at(table, 128))
        } else {
            None
        };
        let x_dsdt = u64_at(table, 140).unwrap_or(0);
        let dsdt = if x_dsdt != 0 { x_dsdt } else { u64::from(u32_at(table, 40)?) };
        Some(Fadt {
            revision: table[8],
            flags,
            sci_interrupt: u16_at(table, 46)?,
            smi_command: u32_at(table, 48)?,
            acpi_enable: u8_at(table, 52)?,
            pm1a_event: u32_at(table, 56)?,
            pm1b_event: u32_at(table, 60)?,
            pm1a_control: u32_at(table, 64)?,
            pm1b_control: u32_at(table, 68)?,
            gpe0_block: u32_at(table, 80)?,
            gpe1_block: u32_at(table, 84)?,
            pm1_event_length: u8_at(table, 88)?,
            gpe0_block_length: u8_at(table, 92)?,
            gpe1_block_length: u8_at(table, 93)?,
            reset,
            dsdt,
            sleep_control: table.get(244..256).and_then(GenericAddress::parse),
            sleep_status: table.get(256..268).and_then(GenericAddress::parse),
        })
    }

    /// Hardware-reduced ACPI (QEMU microvm): no PM1 blocks.
    pub fn is_hardware_reduced(&self) -> bool {
        self.flags & FLAG_HARDWARE_REDUCED != 0
    }

    /// The port of the PM1a enable register (the second half of the event block).
    pub fn pm1a_enable(&self) -> Option<u32> {
        (self.pm1a_event != 0 && self.pm1_event_length >= 4).then(|| self.pm1a_event + u32::from(self.pm1_event_length / 2))
    }
}

/// AML opcodes the `\_S5` scan understands.
const AML_NAME: u8 = 0x08;
const AML_PACKAGE: u8 = 0x12;
const AML_ZERO: u8 = 0x00;
const AML_ONE: u8 = 0x01;
const AML_BYTE_PREFIX: u8 = 0x0a;
const AML_WORD_PREFIX: u8 = 0x0b;
const AML_DWORD_PREFIX: u8 = 0x0c;
const AML_ONES: u8 = 0xff;

/// One integer constant of a package; returns (value, bytes used).
fn aml_integer(data: &[u8]) -> Option<(u64, usize)> {
    match *data.first()? {
        AML_ZERO => Some((0, 1)),
        AML_ONE => Some((1, 1)),
        AML_ONES => Some((u64::MAX, 1)),
        AML_BYTE_PREFIX => Some((u64::from(*data.get(1)?), 2)),
        AML_WORD_PREFIX => Some((u64::from(u16_at(data, 1)?), 3)),
        AML_DWORD_PREFIX => Some((u64::from(u32_at(data, 1)?), 5)),
        _ => None,
    }
}

/// The sleep types of `\_S5` (SLP_TYPa, SLP_TYPb) in a DSDT or SSDT body
/// (header included or not). `None` if no `Name (_S5, Package { .. })`
/// with two integer constants is found.
pub fn s5_sleep_types(aml: &[u8]) -> Option<(u8, u8)> {
    let mut from = 0;
    while let Some(found) = aml.get(from..)?.windows(4).position(|window| window == b"_S5_") {
        let at = from + found;
        from = at + 4;
        // NameOp, optionally the root prefix, then the name.
        let named = match at.checked_sub(1).map(|i| aml[i]) {
            Some(AML_NAME) => true,
            Some(b'\\') => at >= 2 && aml[at - 2] == AML_NAME,
            _ => false,
        };
        if !named || aml.get(at + 4) != Some(&AML_PACKAGE) {
            continue;
        }
        // PkgLength: the lead byte's top two bits count the bytes that follow.
        let mut cursor = at + 5;
        let lead = *aml.get(cursor)?;
        cursor += 1 + usize::from(lead >> 6);
        // NumElements.
        let elements = *aml.get(cursor)?;
        cursor += 1;
        if elements < 2 {
            continue;
        }
        let Some((a, used)) = aml_integer(aml.get(cursor..)?) else { continue };
        cursor += used;
        let Some((b, _)) = aml_integer(aml.get(cursor..)?) else { continue };
        return Some(((a & 0b111) as u8, (b & 0b111) as u8));
    }
    None
}

/// QEMU's GED event bit for the power button (docs/specs/acpi_hw_reduced_hotplug.rst:
/// bit 1, `ACPI_GED_PWR_DOWN_EVT`).
pub const GED_POWER_DOWN_EVENT: u32 = 1 << 1;

/// The generic event device (`ACPI0013`) of a hardware-reduced machine:
/// where its event selector register is and which interrupt it raises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenericEventDevice {
    /// Physical address of the 32-bit event selector (ESEL; reading it
    /// returns and clears the pending events).
    pub event_register: u64,
    pub interrupt: u32,
    pub edge: bool,
    pub active_high: bool,
}

/// Finds the GED in a DSDT: the `ACPI0013` hardware ID, then the first
/// Extended Interrupt descriptor (`0x89`) and the first system-memory
/// `OperationRegion` after it (QEMU's `EREG`).
pub fn generic_event_device(aml: &[u8]) -> Option<GenericEventDevice> {
    let hid = aml.windows(8).position(|window| window == b"ACPI0013")?;
    let body = aml.get(hid + 8..)?;
    // Extended Interrupt descriptor: 0x89, length (u16), flags, count, GSIs.
    let mut interrupt = None;
    let mut index = 0;
    while index + 9 <= body.len() {
        if body[index] == 0x89 && u16_at(body, index + 1).is_some_and(|length| length >= 6) && body[index + 4] >= 1 {
            let flags = body[index + 3];
            interrupt = Some((u32_at(body, index + 5)?, flags & 0b10 != 0, flags & 0b100 == 0));
            break;
        }
        index += 1;
    }
    let (interrupt, edge, active_high) = interrupt?;
    // OperationRegion: ExtOpPrefix 0x5b, 0x80, NameSeg (4), space 0 (memory), offset.
    let mut index = 0;
    while index + 7 <= body.len() {
        if body[index] == 0x5b
            && body[index + 1] == 0x80
            && body[index + 6] == 0x00
            && let Some((address, _)) = body.get(index + 7..).and_then(aml_integer)
        {
            return Some(GenericEventDevice { event_register: address, interrupt, edge, active_high });
        }
        index += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A FADT as QEMU's q35 builder lays it out (revision 3, ICH9 ports).
    fn q35_fadt() -> Vec<u8> {
        let mut table = vec![0u8; 244];
        table[..4].copy_from_slice(b"FACP");
        table[4..8].copy_from_slice(&244u32.to_le_bytes());
        table[8] = 3;
        table[40..44].copy_from_slice(&0x7ffe_0040u32.to_le_bytes());
        table[46..48].copy_from_slice(&9u16.to_le_bytes());
        table[48..52].copy_from_slice(&0xb2u32.to_le_bytes());
        table[52] = 0x02;
        table[53] = 0x03;
        table[56..60].copy_from_slice(&0x600u32.to_le_bytes());
        table[64..68].copy_from_slice(&0x604u32.to_le_bytes());
        table[80..84].copy_from_slice(&0x620u32.to_le_bytes());
        table[88] = 4;
        table[89] = 2;
        table[92] = 16;
        table[112..116].copy_from_slice(&(FLAG_RESET_REGISTER | 1).to_le_bytes());
        // RESET_REG: I/O port 0xcf9, 8 bits; value 0x0f.
        table[116] = 1;
        table[117] = 8;
        table[119] = 1;
        table[120..128].copy_from_slice(&0xcf9u64.to_le_bytes());
        table[128] = 0x0f;
        table
    }

    #[test]
    fn q35_fadt_gives_the_ich9_power_registers() {
        let fadt = Fadt::parse(&q35_fadt()).expect("parses");
        assert_eq!(fadt.sci_interrupt, 9);
        assert_eq!((fadt.smi_command, fadt.acpi_enable), (0xb2, 0x02));
        assert_eq!((fadt.pm1a_event, fadt.pm1a_control), (0x600, 0x604));
        assert_eq!(fadt.pm1a_enable(), Some(0x602));
        assert_eq!((fadt.gpe0_block, fadt.gpe0_block_length), (0x620, 16));
        assert_eq!(fadt.dsdt, 0x7ffe_0040);
        assert!(!fadt.is_hardware_reduced());
        let (register, value) = fadt.reset.expect("reset register");
        assert_eq!((register.space, register.address, register.width_bytes(), value), (AddressSpace::Io, 0xcf9, 1, 0x0f));
        assert_eq!(fadt.sleep_control, None);
    }

    #[test]
    fn reset_register_is_absent_without_its_flag() {
        let mut table = q35_fadt();
        table[112..116].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(Fadt::parse(&table).expect("parses").reset, None);
    }

    #[test]
    fn hardware_reduced_fadt_gives_the_sleep_registers() {
        let mut table = q35_fadt();
        table.resize(276, 0);
        table[112..116].copy_from_slice(&(FLAG_HARDWARE_REDUCED | FLAG_RESET_REGISTER).to_le_bytes());
        table[140..148].copy_from_slice(&0x1234_5000u64.to_le_bytes());
        // SLEEP_CONTROL_REG / SLEEP_STATUS_REG: memory, 8 bits, as microvm's GED.
        for (offset, address) in [(244usize, 0xfea0_0200u64), (256, 0xfea0_0201)] {
            table[offset] = 0;
            table[offset + 1] = 8;
            table[offset + 3] = 1;
            table[offset + 4..offset + 12].copy_from_slice(&address.to_le_bytes());
        }
        let fadt = Fadt::parse(&table).expect("parses");
        assert!(fadt.is_hardware_reduced());
        assert_eq!(fadt.dsdt, 0x1234_5000, "X_DSDT wins over DSDT");
        let control = fadt.sleep_control.expect("sleep control");
        assert_eq!((control.space, control.address, control.width_bytes()), (AddressSpace::Memory, 0xfea0_0200, 1));
        assert_eq!(fadt.sleep_status.map(|status| status.address), Some(0xfea0_0201));
    }

    #[test]
    fn short_or_foreign_tables_are_refused() {
        assert_eq!(Fadt::parse(&q35_fadt()[..100]), None);
        let mut table = q35_fadt();
        table[..4].copy_from_slice(b"APIC");
        assert_eq!(Fadt::parse(&table), None);
        assert_eq!(Fadt::parse(&[]), None);
    }

    #[test]
    fn s5_package_of_zero_ops_as_qemu_builds_it() {
        // ... Name (_S5, Package (4) { Zero, Zero, Zero, Zero }) ...
        let aml = [0x10, 0x08, AML_NAME, b'_', b'S', b'5', b'_', AML_PACKAGE, 0x06, 0x04, 0, 0, 0, 0, 0x5b];
        assert_eq!(s5_sleep_types(&aml), Some((0, 0)));
    }

    #[test]
    fn s5_package_with_byte_prefixes_and_root_name() {
        let aml = [
            AML_NAME,
            b'\\',
            b'_',
            b'S',
            b'5',
            b'_',
            AML_PACKAGE,
            0x0a,
            0x04,
            AML_BYTE_PREFIX,
            0x05,
            AML_BYTE_PREFIX,
            0x07,
            AML_ZERO,
            AML_ZERO,
        ];
        assert_eq!(s5_sleep_types(&aml), Some((5, 7)));
    }

    #[test]
    fn s5_after_a_reference_that_is_not_a_name_declaration() {
        // A method that mentions _S5_ first (no NameOp before it), then the object.
        let aml = [
            0x70,
            b'_',
            b'S',
            b'5',
            b'_',
            0x60,
            AML_NAME,
            b'_',
            b'S',
            b'5',
            b'_',
            AML_PACKAGE,
            0x40,
            0x07,
            0x02,
            AML_ONE,
            AML_WORD_PREFIX,
            0x06,
            0x00,
        ];
        assert_eq!(s5_sleep_types(&aml), Some((1, 6)), "two-byte PkgLength skipped, first match ignored");
    }

    #[test]
    fn s5_missing_or_truncated_gives_none() {
        assert_eq!(s5_sleep_types(b"no sleep states here"), None);
        assert_eq!(s5_sleep_types(&[AML_NAME, b'_', b'S', b'5', b'_', AML_PACKAGE, 0x06]), None);
        assert_eq!(s5_sleep_types(&[AML_NAME, b'_', b'S', b'5', b'_', AML_PACKAGE, 0x06, 0x04, AML_BYTE_PREFIX]), None);
    }

    #[test]
    fn sleep_values_keep_sci_enable_and_set_sleep_enable() {
        assert_eq!(pm1_sleep_value(PM1_CONTROL_SCI_ENABLE, 0), 0x2001);
        assert_eq!(pm1_sleep_value(0x1c01, 5), 0x3401);
        assert_eq!(sleep_control_value(5), 0x34);
    }

    #[test]
    fn generic_event_device_as_qemu_microvm_describes_it() {
        let mut aml = Vec::new();
        aml.extend_from_slice(&[AML_NAME, b'_', b'H', b'I', b'D', 0x0d]);
        aml.extend_from_slice(b"ACPI0013\0");
        // _CRS: Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) { 9 }
        aml.extend_from_slice(&[AML_NAME, b'_', b'C', b'R', b'S', 0x11, 0x0e, 0x0a, 0x0b]);
        aml.extend_from_slice(&[0x89, 0x06, 0x00, 0x03, 0x01, 0x09, 0x00, 0x00, 0x00, 0x79, 0x00]);
        // OperationRegion (EREG, SystemMemory, 0xFEA00000, 0x04)
        aml.extend_from_slice(&[0x5b, 0x80, b'E', b'R', b'E', b'G', 0x00, AML_DWORD_PREFIX, 0x00, 0x00, 0xa0, 0xfe, 0x0a, 0x04]);
        let ged = generic_event_device(&aml).expect("found");
        assert_eq!(ged, GenericEventDevice { event_register: 0xfea0_0000, interrupt: 9, edge: true, active_high: true });
        assert_eq!(generic_event_device(&aml[..20]), None, "no interrupt descriptor, no device");
        assert_eq!(generic_event_device(b"PNP0C0C"), None);
    }
}
