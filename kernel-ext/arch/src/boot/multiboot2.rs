//! The Multiboot2 boot information (GRUB's third way in): command line,
//! boot modules (the boot archive), the memory map (the EFI memory map
//! when the loader gives one, under UEFI), and the ACPI RSDP, which the
//! loader copies into a tag. Under UEFI there are no legacy BIOS areas to
//! scan, so the RSDP tag is the only way to the ACPI tables.
//!
//! Every tag is read inside the information's own `total_size`, and every
//! field inside its tag's `size`; a malformed tag ends the walk.

use super::{BootInfo, MemoryKind};

const TAG_END: u32 = 0;
const TAG_COMMAND_LINE: u32 = 1;
const TAG_MODULE: u32 = 3;
const TAG_MEMORY_MAP: u32 = 6;
const TAG_ACPI_OLD: u32 = 14;
const TAG_ACPI_NEW: u32 = 15;
const TAG_EFI_MEMORY_MAP: u32 = 17;

/// Largest information block believed (GRUB's are a few KiB).
const MAX_TOTAL_SIZE: usize = 1 << 20;

fn u32_at(data: &[u8], offset: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(offset..offset + 4)?.try_into().ok()?))
}

fn u64_at(data: &[u8], offset: usize) -> Option<u64> {
    Some(u64::from_le_bytes(data.get(offset..offset + 8)?.try_into().ok()?))
}

/// The tags of an information block: (type, body without the 8-byte head).
fn tags(info: &[u8]) -> impl Iterator<Item = (u32, &[u8])> {
    let mut offset = 8;
    core::iter::from_fn(move || {
        let kind = u32_at(info, offset)?;
        let size = u32_at(info, offset + 4)? as usize;
        if kind == TAG_END || size < 8 {
            return None;
        }
        let body = info.get(offset + 8..offset + size)?;
        offset = (offset + size).next_multiple_of(8);
        Some((kind, body))
    })
}

/// EFI memory types that are free RAM once the boot services have exited.
fn efi_usable(kind: u32) -> bool {
    // LoaderCode, LoaderData, BootServicesCode, BootServicesData, Conventional.
    matches!(kind, 1 | 2 | 3 | 4 | 7)
}

/// Fills `info` from the information block at physical `address`.
///
/// # Safety
/// `address` must be the loader's Multiboot2 information, identity mapped
/// (the boot page tables map the first 4 GiB; GRUB places it below 4 GiB).
pub(super) unsafe fn read(address: u64, info: &mut BootInfo) {
    // SAFETY: per the caller, the 8-byte head is readable.
    let total = unsafe { core::ptr::read_unaligned(address as *const u32) } as usize;
    if !(16..=MAX_TOTAL_SIZE).contains(&total) {
        return;
    }
    // SAFETY: per the caller, the whole block (its own total_size) is readable.
    let data = unsafe { core::slice::from_raw_parts(address as *const u8, total) };
    let has_efi_map = tags(data).any(|(kind, _)| kind == TAG_EFI_MEMORY_MAP);
    for (kind, body) in tags(data) {
        match kind {
            TAG_COMMAND_LINE => info.set_command_line(body),
            TAG_MODULE => {
                if let (Some(start), Some(end)) = (u32_at(body, 0), u32_at(body, 4)) {
                    info.push_module(u64::from(start), u64::from(end.saturating_sub(start)));
                }
            }
            TAG_MEMORY_MAP if !has_efi_map => {
                let entry_size = u32_at(body, 0).unwrap_or(0) as usize;
                if entry_size < 24 {
                    continue;
                }
                for entry in body.get(8..).unwrap_or(&[]).chunks_exact(entry_size) {
                    let (Some(base), Some(length), Some(kind)) = (u64_at(entry, 0), u64_at(entry, 8), u32_at(entry, 16)) else {
                        continue;
                    };
                    let kind = if kind == 1 { MemoryKind::Usable } else { MemoryKind::Reserved };
                    info.push_region(base, base.saturating_add(length), kind);
                }
            }
            TAG_EFI_MEMORY_MAP => {
                let descriptor_size = u32_at(body, 0).unwrap_or(0) as usize;
                if descriptor_size < 40 {
                    continue;
                }
                for descriptor in body.get(8..).unwrap_or(&[]).chunks_exact(descriptor_size) {
                    let (Some(kind), Some(start), Some(pages)) = (u32_at(descriptor, 0), u64_at(descriptor, 8), u64_at(descriptor, 24))
                    else {
                        continue;
                    };
                    let kind = if efi_usable(kind) { MemoryKind::Usable } else { MemoryKind::Reserved };
                    info.push_region_merged(start, start.saturating_add(pages.saturating_mul(4096)), kind);
                }
            }
            // The new (v2) RSDP wins over the old one whatever the order.
            TAG_ACPI_OLD | TAG_ACPI_NEW if kind == TAG_ACPI_NEW || info.rsdp.is_none() => info.set_rsdp_copy(body),
            _ => {}
        }
    }
}
