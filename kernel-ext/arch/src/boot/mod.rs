//! Boot: the entries, and the boot information each loader hands over,
//! turned into one [`BootInfo`] whichever way the image was entered.

pub mod entry;
mod fdt;
mod multiboot2;

use core::fmt;

use hermit_entry::boot_info::{BootInfo as HermitBootInfo, PlatformInfo, RawBootInfo};

pub use entry::{
    HERMIT_ABI_VERSION, MULTIBOOT2_BOOTLOADER_MAGIC, UHYVE_INTERFACE_VERSION, boot_stack, boot_stack_guard, boot_tsc,
    release_hermit_secondary,
};

/// How the image was entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootPath {
    /// QEMU `-kernel` through the PVH note (`hvm_start_info` in `ebx`).
    Pvh,
    /// uhyve through the Hermit boot protocol (`RawBootInfo`).
    Hermit,
    /// GRUB (a disk image under BIOS or UEFI) through Multiboot2.
    Multiboot2,
}

impl BootPath {
    /// A short name for logs and the banner.
    pub fn name(self) -> &'static str {
        match self {
            BootPath::Pvh => "pvh",
            BootPath::Hermit => "hermit/uhyve",
            BootPath::Multiboot2 => "multiboot2",
        }
    }

    /// Whether the machine is a PC described by ACPI (MADT, FADT, COM1,
    /// the legacy PIC): every way in but uhyve's.
    pub fn is_acpi_pc(self) -> bool {
        self != BootPath::Hermit
    }
}

/// What a memory range holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryKind {
    /// RAM free for the kernel.
    Usable,
    /// Anything else (firmware, ACPI, device windows).
    Reserved,
}

/// A physical memory range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    pub start: u64,
    pub end: u64,
    pub kind: MemoryKind,
}

/// A file handed over by the loader (QEMU `-initrd`, uhyve's image).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootModule {
    pub start: u64,
    pub size: u64,
}

/// Facts only uhyve provides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UhyveFacts {
    pub cpu_count: u64,
    pub cpu_khz: Option<u32>,
    /// Wall-clock time at boot, nanoseconds since the Unix epoch.
    pub boot_time_unix_ns: i128,
    pub has_pci: bool,
}

const MAX_REGIONS: usize = 64;
const MAX_MODULES: usize = 8;
const MAX_COMMAND_LINE: usize = 4096;

/// Everything the kernel needs from the loader, copied out of loader memory
/// so that the heap may later reuse it.
pub struct BootInfo {
    pub path: BootPath,
    regions: [MemoryRegion; MAX_REGIONS],
    region_count: usize,
    modules: [BootModule; MAX_MODULES],
    module_count: usize,
    command_line: [u8; MAX_COMMAND_LINE],
    command_line_len: usize,
    /// Whether the command line had to be cut to fit.
    pub command_line_truncated: bool,
    /// ACPI RSDP physical address, where the loader gave one.
    pub rsdp: Option<u64>,
    /// The RSDP itself when the loader handed over a copy (Multiboot2's
    /// ACPI tags); `rsdp` then points here.
    rsdp_copy: [u8; 36],
    pub uhyve: Option<UhyveFacts>,
    /// TSC value at the first instruction.
    pub boot_tsc: u64,
}

impl fmt::Debug for BootInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BootInfo")
            .field("path", &self.path)
            .field("regions", &self.regions())
            .field("modules", &self.modules())
            .field("command_line", &self.command_line())
            .field("rsdp", &self.rsdp)
            .field("uhyve", &self.uhyve)
            .finish()
    }
}

impl BootInfo {
    const fn empty(path: BootPath) -> Self {
        Self {
            path,
            regions: [MemoryRegion { start: 0, end: 0, kind: MemoryKind::Reserved }; MAX_REGIONS],
            region_count: 0,
            modules: [BootModule { start: 0, size: 0 }; MAX_MODULES],
            module_count: 0,
            command_line: [0; MAX_COMMAND_LINE],
            command_line_len: 0,
            command_line_truncated: false,
            rsdp: None,
            rsdp_copy: [0; 36],
            uhyve: None,
            boot_tsc: 0,
        }
    }

    /// The memory map as the loader described it.
    pub fn regions(&self) -> &[MemoryRegion] {
        &self.regions[..self.region_count]
    }

    /// Files handed over by the loader.
    pub fn modules(&self) -> &[BootModule] {
        &self.modules[..self.module_count]
    }

    /// The kernel command line (`key=value` pairs), empty if none.
    pub fn command_line(&self) -> &str {
        core::str::from_utf8(&self.command_line[..self.command_line_len]).unwrap_or("")
    }

    /// Total usable RAM in bytes.
    pub fn usable_bytes(&self) -> u64 {
        self.regions().iter().filter(|r| r.kind == MemoryKind::Usable).map(|r| r.end - r.start).sum()
    }

    /// The end of the highest usable RAM range.
    pub fn ram_end(&self) -> u64 {
        self.regions().iter().filter(|r| r.kind == MemoryKind::Usable).map(|r| r.end).max().unwrap_or(0)
    }

    fn push_region(&mut self, start: u64, end: u64, kind: MemoryKind) {
        if end > start && self.region_count < MAX_REGIONS {
            self.regions[self.region_count] = MemoryRegion { start, end, kind };
            self.region_count += 1;
        }
    }

    /// As `push_region`, but extends a region of the same kind that ends
    /// where this one starts (EFI memory maps come in many small pieces).
    fn push_region_merged(&mut self, start: u64, end: u64, kind: MemoryKind) {
        if end <= start {
            return;
        }
        let count = self.region_count;
        if let Some(region) = self.regions[..count].iter_mut().find(|r| r.kind == kind && (r.end == start || r.start == end)) {
            region.start = region.start.min(start);
            region.end = region.end.max(end);
            return;
        }
        self.push_region(start, end, kind);
    }

    /// Keeps a copy of the RSDP (a loader's tag that will be reused as RAM).
    fn set_rsdp_copy(&mut self, rsdp: &[u8]) {
        let len = rsdp.len().min(self.rsdp_copy.len());
        if len < 20 || &rsdp[..8] != b"RSD PTR " {
            return;
        }
        self.rsdp_copy = [0; 36];
        self.rsdp_copy[..len].copy_from_slice(&rsdp[..len]);
        self.rsdp = Some(self.rsdp_copy.as_ptr() as u64);
    }

    fn push_module(&mut self, start: u64, size: u64) {
        if size > 0 && self.module_count < MAX_MODULES {
            self.modules[self.module_count] = BootModule { start, size };
            self.module_count += 1;
        }
    }

    fn set_command_line(&mut self, bytes: &[u8]) {
        let bytes = match bytes.iter().position(|&b| b == 0) {
            Some(end) => &bytes[..end],
            None => bytes,
        };
        // Keep only the longest valid UTF-8 prefix that fits.
        let mut len = bytes.len().min(MAX_COMMAND_LINE);
        self.command_line_truncated = len < bytes.len();
        while core::str::from_utf8(&bytes[..len]).is_err() {
            len -= 1;
        }
        self.command_line[..len].copy_from_slice(&bytes[..len]);
        self.command_line_len = len;
    }
}

static mut BOOT_INFO: BootInfo = BootInfo::empty(BootPath::Pvh);

const PVH_MAGIC: u32 = 0x336e_c578;

#[repr(C)]
struct HvmStartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    module_count: u32,
    module_list: u64,
    command_line: u64,
    rsdp: u64,
    memory_map: u64,
    memory_map_entries: u32,
    reserved: u32,
}

#[repr(C)]
struct HvmModule {
    address: u64,
    size: u64,
    command_line: u64,
    reserved: u64,
}

#[repr(C)]
struct HvmMemoryMapEntry {
    address: u64,
    size: u64,
    kind: u32,
    reserved: u32,
}

/// Reads a NUL-terminated string of at most `max` bytes at physical `address`.
///
/// # Safety
/// `address` must be identity mapped and readable for the string's length.
unsafe fn c_string(address: u64, max: usize) -> &'static [u8] {
    let pointer = address as *const u8;
    let mut len = 0;
    // SAFETY: the caller guarantees readability up to the terminator.
    while len < max && unsafe { *pointer.add(len) } != 0 {
        len += 1;
    }
    // SAFETY: the bytes just scanned are readable.
    unsafe { core::slice::from_raw_parts(pointer, len) }
}

unsafe extern "Rust" {
    /// The kernel's entry, defined by the `kernel` crate.
    fn __rtedge_kernel_entry(info: &'static BootInfo) -> !;
}

/// Called by the PVH entry code with the physical `hvm_start_info` address.
#[unsafe(no_mangle)]
extern "C" fn rtedge_pvh_entry(start_info: u64, tsc: u64) -> ! {
    // SAFETY: only the boot CPU runs here, before anything else reads BOOT_INFO.
    let info = unsafe { &mut *(&raw mut BOOT_INFO) };
    info.path = BootPath::Pvh;
    info.boot_tsc = tsc;
    // SAFETY: QEMU passes a valid hvm_start_info in identity-mapped low memory.
    let start = unsafe { &*(start_info as *const HvmStartInfo) };
    if start.magic == PVH_MAGIC {
        if start.command_line != 0 {
            // SAFETY: QEMU's command line is a C string in low memory.
            info.set_command_line(unsafe { c_string(start.command_line, 64 * 1024) });
        }
        if start.rsdp != 0 {
            info.rsdp = Some(start.rsdp);
        }
        if start.version >= 1 && start.memory_map != 0 {
            for i in 0..start.memory_map_entries as usize {
                // SAFETY: QEMU gives `memory_map_entries` entries at `memory_map`.
                let entry = unsafe { &*(start.memory_map as *const HvmMemoryMapEntry).add(i) };
                let kind = if entry.kind == 1 { MemoryKind::Usable } else { MemoryKind::Reserved };
                info.push_region(entry.address, entry.address.saturating_add(entry.size), kind);
            }
        }
        for i in 0..start.module_count as usize {
            // SAFETY: QEMU gives `module_count` entries at `module_list`.
            let module = unsafe { &*(start.module_list as *const HvmModule).add(i) };
            info.push_module(module.address, module.size);
        }
    }
    // SAFETY: BOOT_INFO is complete and never written again.
    unsafe { __rtedge_kernel_entry(&*(&raw const BOOT_INFO)) }
}

/// Called by the 32-bit entry code when GRUB entered through Multiboot2,
/// with the physical address of the boot information and `eax`'s magic.
#[unsafe(no_mangle)]
extern "C" fn rtedge_multiboot2_entry(information: u64, tsc: u64, magic: u32) -> ! {
    // SAFETY: only the boot CPU runs here, before anything else reads BOOT_INFO.
    let info = unsafe { &mut *(&raw mut BOOT_INFO) };
    info.path = BootPath::Multiboot2;
    info.boot_tsc = tsc;
    if magic == MULTIBOOT2_BOOTLOADER_MAGIC {
        // SAFETY: a Multiboot2 loader passes its information block in ebx,
        // below 4 GiB, which the boot page tables identity map.
        unsafe { multiboot2::read(information, info) };
    }
    // SAFETY: BOOT_INFO is complete and never written again.
    unsafe { __rtedge_kernel_entry(&*(&raw const BOOT_INFO)) }
}

/// Called by the Hermit entry code on the boot CPU.
#[unsafe(no_mangle)]
extern "C" fn rtedge_hermit_entry(raw_info: *const RawBootInfo, tsc: u64) -> ! {
    // SAFETY: only the boot CPU runs here, before anything else reads BOOT_INFO.
    let info = unsafe { &mut *(&raw mut BOOT_INFO) };
    info.path = BootPath::Hermit;
    info.boot_tsc = tsc;
    // SAFETY: uhyve passes a valid RawBootInfo in identity-mapped memory.
    let loader_info = HermitBootInfo::from(unsafe { *raw_info });
    let range = loader_info.hardware_info.phys_addr_range;
    info.push_region(range.start, range.end, MemoryKind::Usable);
    if let PlatformInfo::Uhyve { has_pci, num_cpus, cpu_freq, boot_time } = loader_info.platform_info {
        info.uhyve = Some(UhyveFacts {
            has_pci,
            cpu_count: num_cpus.get(),
            cpu_khz: cpu_freq.map(|khz| khz.get()),
            boot_time_unix_ns: boot_time.unix_timestamp_nanos(),
        });
    }
    if let Some(device_tree) = loader_info.hardware_info.device_tree {
        // SAFETY: uhyve writes a valid FDT at this identity-mapped address.
        if let Some(tree) = unsafe { fdt::Fdt::at(device_tree.get()) } {
            if let Some(args) = tree.property(b"/chosen", b"bootargs") {
                // uhyve joins kernel and application arguments with " -- ".
                let args = match args.windows(2).position(|w| w == b"--") {
                    Some(split) => &args[..split],
                    None => args,
                };
                info.set_command_line(args);
            }
            let start = tree.property(b"/chosen", b"linux,initrd-start").and_then(fdt::be_u64);
            let end = tree.property(b"/chosen", b"linux,initrd-end").and_then(fdt::be_u64);
            if let (Some(start), Some(end)) = (start, end) {
                info.push_module(start, end.saturating_sub(start));
            }
        }
    }
    // SAFETY: BOOT_INFO is complete and never written again.
    unsafe { __rtedge_kernel_entry(&*(&raw const BOOT_INFO)) }
}

unsafe extern "Rust" {
    /// The kernel's entry for secondary CPUs, defined by the `kernel` crate.
    fn __rtedge_secondary_entry(cpu_index: u32) -> !;
}

/// Called by the Hermit entry code on a released secondary CPU.
#[unsafe(no_mangle)]
extern "C" fn rtedge_hermit_secondary_entry(cpu_index: u32) -> ! {
    // SAFETY: the kernel released this CPU with its own stack.
    unsafe { __rtedge_secondary_entry(cpu_index) }
}
