//! Just enough ACPI to find the CPUs and interrupt controllers: the RSDP
//! (from the loader, or by scanning the BIOS area), the RSDT/XSDT, and the
//! MADT's local APIC, x2APIC, I/O APIC and interrupt-override entries; and
//! any other table by signature (the FADT for power management, whose bytes
//! `rtedge_engine::acpi` reads).
//! Every read is bounds-checked against the table's own length, and tables
//! with a wrong checksum are ignored.

use core::sync::atomic::{AtomicPtr, Ordering};

const MAX_CPUS: usize = 64;
const MAX_IO_APICS: usize = 4;
const MAX_OVERRIDES: usize = 16;

/// A CPU the firmware lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuEntry {
    pub apic_id: u32,
    pub enabled: bool,
}

/// An I/O APIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoApicEntry {
    pub id: u8,
    pub address: u64,
    pub gsi_base: u32,
}

/// An ISA interrupt routed differently from the identity mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterruptOverride {
    pub source: u8,
    pub gsi: u32,
    /// MPS INTI flags: polarity (bits 0-1) and trigger mode (bits 2-3).
    pub flags: u16,
}

/// What the MADT says.
#[derive(Clone, Copy, Debug)]
pub struct Madt {
    pub local_apic_address: u64,
    cpus: [CpuEntry; MAX_CPUS],
    cpu_count: usize,
    io_apics: [IoApicEntry; MAX_IO_APICS],
    io_apic_count: usize,
    overrides: [InterruptOverride; MAX_OVERRIDES],
    override_count: usize,
}

impl Madt {
    const fn empty() -> Self {
        Self {
            local_apic_address: 0xfee0_0000,
            cpus: [CpuEntry { apic_id: 0, enabled: false }; MAX_CPUS],
            cpu_count: 0,
            io_apics: [IoApicEntry { id: 0, address: 0, gsi_base: 0 }; MAX_IO_APICS],
            io_apic_count: 0,
            overrides: [InterruptOverride { source: 0, gsi: 0, flags: 0 }; MAX_OVERRIDES],
            override_count: 0,
        }
    }

    /// CPUs in firmware order (the boot CPU first, by ACPI convention).
    pub fn cpus(&self) -> &[CpuEntry] {
        &self.cpus[..self.cpu_count]
    }

    pub fn io_apics(&self) -> &[IoApicEntry] {
        &self.io_apics[..self.io_apic_count]
    }

    pub fn overrides(&self) -> &[InterruptOverride] {
        &self.overrides[..self.override_count]
    }

    /// The GSI and flags an ISA IRQ is wired to.
    pub fn isa_irq(&self, irq: u8) -> (u32, u16) {
        self.overrides().iter().find(|o| o.source == irq).map_or((u32::from(irq), 0), |o| (o.gsi, o.flags))
    }
}

/// Makes a physical range readable at its own address (installed by the
/// kernel once its page tables exist; a null pointer means "already mapped").
static MAPPER: AtomicPtr<Mapper> = AtomicPtr::new(core::ptr::null_mut());

/// Identity maps `[address, address + len)` of firmware memory.
pub type Mapper = fn(u64, u64);

/// Installs the function that identity maps firmware memory before a table
/// is read: firmware puts ACPI tables in reserved memory above the last
/// usable RAM (SeaBIOS at the top of RAM, OVMF among its own regions), which
/// the kernel's RAM mapping does not cover.
///
/// The mapper lives in a `static` the kernel owns.
pub fn set_mapper(mapper: &'static Mapper) {
    MAPPER.store(core::ptr::from_ref(mapper).cast_mut(), Ordering::Release);
}

/// Reads `len` bytes of physical memory (identity mapped RAM below the
/// kernel's RAM end, where QEMU puts ACPI tables, or mapped by the mapper).
///
/// # Safety
/// `[address, address + len)` must be mapped and readable, or be firmware
/// memory that the installed mapper maps.
unsafe fn bytes(address: u64, len: usize) -> &'static [u8] {
    let mapper = MAPPER.load(Ordering::Acquire);
    if !mapper.is_null() {
        // SAFETY: only `set_mapper` stores here, always from a
        // `&'static Mapper`: valid, aligned and never written through.
        let mapper: Mapper = unsafe { *mapper };
        mapper(address, len as u64);
    }
    // SAFETY: per the caller.
    unsafe { core::slice::from_raw_parts(address as *const u8, len) }
}

fn checksum_ok(data: &[u8]) -> bool {
    data.iter().fold(0u8, |sum, &b| sum.wrapping_add(b)) == 0
}

fn u32_at(data: &[u8], offset: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(offset..offset + 4)?.try_into().ok()?))
}

fn u64_at(data: &[u8], offset: usize) -> Option<u64> {
    Some(u64::from_le_bytes(data.get(offset..offset + 8)?.try_into().ok()?))
}

/// Looks for "RSD PTR " on 16-byte boundaries in the BIOS read-only area.
///
/// # Safety
/// The low 1 MiB must be identity mapped.
unsafe fn scan_for_rsdp() -> Option<u64> {
    let mut address = 0xe0000u64;
    while address < 0x10_0000 {
        // SAFETY: per the caller.
        let candidate = unsafe { bytes(address, 20) };
        if &candidate[..8] == b"RSD PTR " && checksum_ok(candidate) {
            return Some(address);
        }
        address += 16;
    }
    None
}

/// A system description table's bytes, after checking its length bound and
/// checksum.
///
/// # Safety
/// The table's header and body must be mapped.
unsafe fn table(address: u64) -> Option<&'static [u8]> {
    // SAFETY: per the caller (the 36-byte header first).
    let header = unsafe { bytes(address, 36) };
    let len = u32_at(header, 4)? as usize;
    if !(36..=1 << 20).contains(&len) {
        return None;
    }
    // SAFETY: per the caller.
    let data = unsafe { bytes(address, len) };
    checksum_ok(data).then_some(data)
}

/// Finds and parses the MADT.
///
/// # Safety
/// ACPI tables must be in identity-mapped memory (true for QEMU's tables,
/// which sit in low RAM), and so must the BIOS area if `rsdp` is `None`.
pub unsafe fn read_madt(rsdp: Option<u64>) -> Option<Madt> {
    // SAFETY: per the caller.
    parse_madt(unsafe { find_table(rsdp, b"APIC")? })
}

/// The RSDP's address: the loader's, or found by scanning the BIOS area.
///
/// # Safety
/// The BIOS area must be identity mapped if `rsdp` is `None`.
pub unsafe fn rsdp_address(rsdp: Option<u64>) -> Option<u64> {
    match rsdp {
        Some(address) => Some(address),
        // SAFETY: per the caller, the BIOS area is mapped.
        None => unsafe { scan_for_rsdp() },
    }
}

/// A table's bytes by its physical address (for the DSDT, which the FADT
/// names and the root table does not list), length-bounded and checksummed.
///
/// # Safety
/// The table must be in identity-mapped memory.
pub unsafe fn table_at(address: u64) -> Option<&'static [u8]> {
    // SAFETY: per the caller.
    unsafe { table(address) }
}

/// Finds the first table with `signature` through the RSDP's XSDT (or RSDT).
///
/// # Safety
/// As [`read_madt`].
pub unsafe fn find_table(rsdp: Option<u64>, signature: &[u8; 4]) -> Option<&'static [u8]> {
    // SAFETY: per the caller.
    let rsdp = unsafe { rsdp_address(rsdp)? };
    // SAFETY: per the caller.
    let header = unsafe { bytes(rsdp, 36) };
    if &header[..8] != b"RSD PTR " {
        return None;
    }
    let revision = header[15];
    let (root, entry_size) = if revision >= 2 {
        match u64_at(header, 24) {
            Some(xsdt) if xsdt != 0 => (xsdt, 8),
            _ => (u64::from(u32_at(header, 16)?), 4),
        }
    } else {
        (u64::from(u32_at(header, 16)?), 4)
    };
    // SAFETY: per the caller.
    let root_table = unsafe { table(root)? };
    let mut offset = 36;
    while offset + entry_size <= root_table.len() {
        let address = if entry_size == 8 { u64_at(root_table, offset)? } else { u64::from(u32_at(root_table, offset)?) };
        offset += entry_size;
        // SAFETY: per the caller.
        let Some(data) = (unsafe { table(address) }) else { continue };
        if &data[..4] == signature {
            return Some(data);
        }
    }
    None
}

fn parse_madt(data: &[u8]) -> Option<Madt> {
    let mut madt = Madt::empty();
    madt.local_apic_address = u64::from(u32_at(data, 36)?);
    let mut offset = 44;
    while offset + 2 <= data.len() {
        let kind = data[offset];
        let len = usize::from(data[offset + 1]);
        if len < 2 || offset + len > data.len() {
            break;
        }
        let entry = &data[offset..offset + len];
        match kind {
            0 if len >= 8 => {
                let flags = u32_at(entry, 4)?;
                if madt.cpu_count < MAX_CPUS && flags & 0b11 != 0 {
                    madt.cpus[madt.cpu_count] = CpuEntry { apic_id: u32::from(entry[3]), enabled: flags & 1 != 0 };
                    madt.cpu_count += 1;
                }
            }
            9 if len >= 16 => {
                let apic_id = u32_at(entry, 4)?;
                let flags = u32_at(entry, 8)?;
                if madt.cpu_count < MAX_CPUS && flags & 0b11 != 0 && !madt.cpus().iter().any(|c| c.apic_id == apic_id) {
                    madt.cpus[madt.cpu_count] = CpuEntry { apic_id, enabled: flags & 1 != 0 };
                    madt.cpu_count += 1;
                }
            }
            1 if len >= 12 && madt.io_apic_count < MAX_IO_APICS => {
                madt.io_apics[madt.io_apic_count] =
                    IoApicEntry { id: entry[2], address: u64::from(u32_at(entry, 4)?), gsi_base: u32_at(entry, 8)? };
                madt.io_apic_count += 1;
            }
            2 if len >= 10 && madt.override_count < MAX_OVERRIDES => {
                madt.overrides[madt.override_count] =
                    InterruptOverride { source: entry[3], gsi: u32_at(entry, 4)?, flags: u16::from_le_bytes([entry[8], entry[9]]) };
                madt.override_count += 1;
            }
            5 if len >= 12 => {
                madt.local_apic_address = u64_at(entry, 4)?;
            }
            _ => {}
        }
        offset += len;
    }
    Some(madt)
}
