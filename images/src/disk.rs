//! `rtedge-image disk`: the appliance as disk images a firmware boots —
//! the way clouds, edge boxes and VM managers start machines.
//!
//! - `rtedge.iso`: a hybrid ISO (GRUB for BIOS and UEFI, `grub-mkrescue`
//!   with Debian's `grub-pc-bin` and `grub-efi-amd64-bin`, `xorriso`,
//!   `mtools`), bootable as a CD or as a disk;
//! - `rtedge.raw` / `rtedge.qcow2`: a GPT disk with one EFI system
//!   partition (UEFI only). The FAT file system is made and filled with
//!   mtools inside an image file, the GPT is written here, and `qemu-img`
//!   converts the result, so nothing needs loop devices, mounts or root.
//!
//! GRUB enters the kernel through Multiboot2; the kernel command line and
//! the control-plane token are in GRUB's configuration, the boot archive is
//! a Multiboot2 module. The kernel is the same ELF that `-kernel` boots,
//! only without its debug sections (its loaded bytes are compared).
//!
//! A release image (`--release`) takes its token from `RTEDGE_TOKEN` or the
//! file named by `RTEDGE_TOKEN_FILE` and refuses to be built without one;
//! the development token never goes into it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

use crate::image::{self, Layout};
use crate::profile::Profiles;

/// What `make disk` aims for: the whole disk image in 8 MiB.
pub const TARGET_BYTES: u64 = 8 << 20;

const SECTOR: u64 = 512;
/// The EFI system partition starts at 1 MiB (the usual alignment).
const PARTITION_START_LBA: u64 = 2048;
const GPT_ENTRIES: u64 = 128;
const GPT_ENTRY_SIZE: u64 = 128;
/// Sectors taken by the partition entry array (128 × 128 bytes).
const GPT_ENTRY_SECTORS: u64 = GPT_ENTRIES * GPT_ENTRY_SIZE / SECTOR;
/// EFI system partition type C12A7328-F81F-11D2-BA4B-00A0C93EC93B.
const EFI_SYSTEM_PARTITION: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// GRUB modules the standalone EFI loader of the raw disk needs.
const GRUB_EFI_MODULES: &str = "multiboot2 normal configfile search search_fs_file fat part_gpt serial terminal echo test";

/// The inputs of the images.
#[derive(Clone, Debug)]
pub struct DiskSpec {
    /// The kernel ELF (as `-kernel` boots it).
    pub kernel: PathBuf,
    /// Kernel command line, token (`auth=`) included.
    pub cmdline: String,
    /// The boot archive handed over as a Multiboot2 module.
    pub archive: PathBuf,
    /// Where the images go.
    pub out_dir: PathBuf,
}

/// The built images.
#[derive(Clone, Debug)]
pub struct Media {
    pub iso: PathBuf,
    pub raw: PathBuf,
    pub qcow2: PathBuf,
    pub kernel: PathBuf,
}

impl Media {
    /// `(path, bytes)` of each image.
    pub fn sizes(&self) -> Vec<(PathBuf, u64)> {
        [&self.iso, &self.raw, &self.qcow2, &self.kernel]
            .into_iter()
            .map(|path| (path.clone(), std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)))
            .collect()
    }
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
}

fn require(name: &str, package: &str) -> Result<PathBuf> {
    find_program(name).with_context(|| format!("{name} not found (Debian package {package}); run `make deps`"))
}

fn run(command: &mut Command) -> Result<()> {
    let description = format!("{command:?}");
    let output = command.output().with_context(|| format!("cannot run {description}"))?;
    if !output.status.success() {
        bail!(
            "{description} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// An `objcopy` that understands ELF64: binutils', else the one Rust ships.
fn objcopy() -> Result<PathBuf> {
    if let Some(path) = find_program("objcopy") {
        return Ok(path);
    }
    let output = Command::new("rustc").args(["--print", "sysroot"]).output().context("cannot run rustc --print sysroot")?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    let candidate = sysroot.join("lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-objcopy");
    ensure!(candidate.is_file(), "no objcopy (Debian package binutils) and no rust-objcopy in {}", sysroot.display());
    Ok(candidate)
}

/// The kernel without debug sections; its loaded bytes must not change.
fn strip_kernel(kernel: &Path, out: &Path) -> Result<()> {
    run(Command::new(objcopy()?).arg("--strip-debug").arg(kernel).arg(out))?;
    let before = std::fs::read(kernel)?;
    let after = std::fs::read(out)?;
    let (before, after) = (loaded_bytes(&before), loaded_bytes(&after));
    ensure!(before.is_some() && before == after, "stripping changed the kernel's loaded segments");
    Ok(())
}

/// The PT_LOAD segments' (address, bytes), to prove that stripping kept them.
fn loaded_bytes(elf: &[u8]) -> Option<Vec<(u64, Vec<u8>)>> {
    let u16_at = |offset: usize| elf.get(offset..offset + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |offset: usize| elf.get(offset..offset + 4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes);
    let u64_at = |offset: usize| elf.get(offset..offset + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
    let table = usize::try_from(u64_at(32)?).ok()?;
    let entry_size = usize::from(u16_at(54)?);
    let count = usize::from(u16_at(56)?);
    let mut segments = Vec::new();
    for index in 0..count {
        let header = table + index * entry_size;
        if u32_at(header)? != 1 {
            continue;
        }
        let offset = usize::try_from(u64_at(header + 8)?).ok()?;
        let address = u64_at(header + 16)?;
        let size = usize::try_from(u64_at(header + 32)?).ok()?;
        segments.push((address, elf.get(offset..offset + size)?.to_vec()));
    }
    Some(segments)
}

/// GRUB's configuration: no menu, no wait, the serial console, the kernel
/// through Multiboot2 with the command line, the boot archive as a module.
/// `locate` finds the files first (the raw disk's standalone GRUB starts
/// in its memory disk).
pub fn grub_config(cmdline: &str, locate: bool) -> String {
    let mut config = String::new();
    config.push_str("# rtedge appliance: generated by `rtedge-image disk`\n");
    config.push_str("set timeout=0\nset timeout_style=hidden\n");
    config.push_str("serial --unit=0 --speed=115200\nterminal_input serial\nterminal_output serial\n");
    config.push_str("set gfxpayload=text\n");
    if locate {
        config.push_str("search --no-floppy --file --set=root /rtedge/rtedge.elf\n");
    }
    config.push_str("menuentry \"rtedge\" {\n");
    let _ = writeln!(config, "    multiboot2 /rtedge/rtedge.elf {cmdline}");
    config.push_str("    module2 /rtedge/boot.archive boot.archive\n");
    config.push_str("    boot\n}\n");
    config
}

/// Builds the ISO, the raw GPT disk and its qcow2 form.
pub fn build_media(spec: &DiskSpec) -> Result<Media> {
    let grub_mkrescue = require("grub-mkrescue", "grub-common")?;
    let grub_mkstandalone = require("grub-mkstandalone", "grub-common")?;
    let qemu_img = require("qemu-img", "qemu-utils")?;
    require("xorriso", "xorriso")?;
    let mformat = require("mformat", "mtools")?;
    let mcopy = require("mcopy", "mtools")?;
    let mmd = require("mmd", "mtools")?;
    for (dir, package) in [("/usr/lib/grub/i386-pc", "grub-pc-bin"), ("/usr/lib/grub/x86_64-efi", "grub-efi-amd64-bin")] {
        ensure!(Path::new(dir).is_dir(), "{dir} missing (Debian package {package}); run `make deps`");
    }
    ensure!(!spec.cmdline.contains(['"', '\n', '\\', '$', ';']), "the kernel command line must not hold GRUB quoting characters");
    let staging = spec.out_dir.join("staging");
    let _ = std::fs::remove_dir_all(&staging);
    let tree = staging.join("iso");
    std::fs::create_dir_all(tree.join("rtedge"))?;
    std::fs::create_dir_all(tree.join("boot/grub"))?;
    let kernel = spec.out_dir.join("rtedge.elf");
    strip_kernel(&spec.kernel, &kernel)?;
    std::fs::copy(&kernel, tree.join("rtedge/rtedge.elf"))?;
    std::fs::copy(&spec.archive, tree.join("rtedge/boot.archive"))
        .with_context(|| format!("cannot copy the boot archive {}", spec.archive.display()))?;

    // 1. The hybrid ISO (BIOS El Torito + MBR, UEFI El Torito with a FAT image).
    std::fs::write(tree.join("boot/grub/grub.cfg"), grub_config(&spec.cmdline, false))?;
    let iso = spec.out_dir.join("rtedge.iso");
    run(Command::new(&grub_mkrescue).arg("-o").arg(&iso).args(["--compress=xz", "--fonts=", "--locales=", "--themes="]).arg(&tree))?;

    // 2. A standalone GRUB EFI binary with the configuration inside.
    let config = staging.join("grub-disk.cfg");
    std::fs::write(&config, grub_config(&spec.cmdline, true))?;
    let efi = staging.join("BOOTX64.EFI");
    run(Command::new(&grub_mkstandalone)
        .args(["-O", "x86_64-efi", "--compress=xz", "--fonts=", "--locales=", "--themes="])
        .arg(format!("--install-modules={GRUB_EFI_MODULES}"))
        .arg(format!("--modules={GRUB_EFI_MODULES}"))
        .arg("-o")
        .arg(&efi)
        .arg(format!("boot/grub/grub.cfg={}", config.display())))?;

    // 3. The EFI system partition: FAT in a file, filled with mtools.
    let payload: u64 = [&efi, &kernel, &spec.archive].iter().map(|path| std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)).sum();
    // Room for the FAT and directories, rounded to whole MiB.
    let partition_bytes = (payload + payload / 8 + (512 << 10)).next_multiple_of(1 << 20).max(4 << 20);
    let partition = staging.join("esp.fat");
    let file = std::fs::File::create(&partition)?;
    file.set_len(partition_bytes)?;
    drop(file);
    let image_arg = |command: &mut Command| {
        command.arg("-i").arg(&partition);
    };
    let mut format = Command::new(&mformat);
    image_arg(&mut format);
    run(format.args(["-v", "RTEDGE", "-h", "64", "-s", "32", "-T"]).arg((partition_bytes / SECTOR).to_string()).arg("::"))?;
    for dir in ["::/EFI", "::/EFI/BOOT", "::/rtedge"] {
        let mut make = Command::new(&mmd);
        image_arg(&mut make);
        run(make.arg(dir))?;
    }
    for (from, to) in [(&efi, "::/EFI/BOOT/BOOTX64.EFI"), (&kernel, "::/rtedge/rtedge.elf"), (&spec.archive, "::/rtedge/boot.archive")] {
        let mut copy = Command::new(&mcopy);
        image_arg(&mut copy);
        run(copy.arg(from).arg(to))?;
    }

    // 4. The GPT disk around it, then qcow2.
    let raw = spec.out_dir.join("rtedge.raw");
    let fat = std::fs::read(&partition)?;
    let seed = fnv1a(&fat);
    std::fs::write(&raw, gpt_disk(&fat, seed)?).with_context(|| format!("cannot write {}", raw.display()))?;
    let qcow2 = spec.out_dir.join("rtedge.qcow2");
    run(Command::new(&qemu_img).args(["convert", "-q", "-c", "-f", "raw", "-O", "qcow2"]).arg(&raw).arg(&qcow2))?;
    let _ = std::fs::remove_dir_all(&staging);
    Ok(Media { iso, raw, qcow2, kernel })
}

// ------------------------------------------------------------------ GPT

/// CRC-32 (IEEE 802.3, reflected), as the GPT headers and entries use.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |hash, &byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

/// A GUID in its on-disk (mixed-endian) form from its text form.
pub fn guid_bytes(text: &str) -> Result<[u8; 16]> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    ensure!(hex.len() == 32, "bad GUID {text}");
    let mut plain = [0u8; 16];
    for (index, byte) in plain.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[index * 2..index * 2 + 2], 16).with_context(|| format!("bad GUID {text}"))?;
    }
    let mut disk = plain;
    disk[0..4].reverse();
    disk[4..6].reverse();
    disk[6..8].reverse();
    Ok(disk)
}

/// A version-4-shaped GUID derived from `seed` (reproducible images).
fn derived_guid(seed: u64, salt: u64) -> [u8; 16] {
    let a = fnv1a(&(seed ^ salt).to_le_bytes());
    let b = fnv1a(&a.wrapping_add(salt).to_le_bytes());
    let mut guid = [0u8; 16];
    guid[..8].copy_from_slice(&a.to_le_bytes());
    guid[8..].copy_from_slice(&b.to_le_bytes());
    guid[7] = (guid[7] & 0x0f) | 0x40;
    guid[8] = (guid[8] & 0x3f) | 0x80;
    guid
}

/// A whole disk: protective MBR, primary GPT, the partition at 1 MiB,
/// backup GPT in the last 33 sectors.
pub fn gpt_disk(partition: &[u8], seed: u64) -> Result<Vec<u8>> {
    ensure!((partition.len() as u64).is_multiple_of(SECTOR), "the partition image is not whole sectors");
    let partition_sectors = partition.len() as u64 / SECTOR;
    let first = PARTITION_START_LBA;
    let last = first + partition_sectors - 1;
    // Backup entries + header after the partition, then 1 MiB alignment.
    let total_sectors = (last + 1 + GPT_ENTRY_SECTORS + 1).next_multiple_of(2048);
    let backup_header_lba = total_sectors - 1;
    let backup_entries_lba = backup_header_lba - GPT_ENTRY_SECTORS;
    let mut disk = vec![0u8; (total_sectors * SECTOR) as usize];

    // Protective MBR: one partition of type 0xEE over the whole disk.
    let mbr = &mut disk[..512];
    mbr[446 + 1..446 + 4].copy_from_slice(&[0x00, 0x02, 0x00]);
    mbr[446 + 4] = 0xee;
    mbr[446 + 5..446 + 8].copy_from_slice(&[0xff, 0xff, 0xff]);
    mbr[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
    let mbr_sectors = u32::try_from(total_sectors - 1).unwrap_or(u32::MAX);
    mbr[446 + 12..446 + 16].copy_from_slice(&mbr_sectors.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xaa;

    // The one entry.
    let mut entries = vec![0u8; (GPT_ENTRIES * GPT_ENTRY_SIZE) as usize];
    entries[0..16].copy_from_slice(&guid_bytes(EFI_SYSTEM_PARTITION)?);
    entries[16..32].copy_from_slice(&derived_guid(seed, 1));
    entries[32..40].copy_from_slice(&first.to_le_bytes());
    entries[40..48].copy_from_slice(&last.to_le_bytes());
    for (index, unit) in "EFI system partition".encode_utf16().enumerate() {
        entries[56 + index * 2..58 + index * 2].copy_from_slice(&unit.to_le_bytes());
    }
    let entries_crc = crc32(&entries);
    let disk_guid = derived_guid(seed, 2);

    let header = |current: u64, backup: u64, entries_lba: u64| -> Vec<u8> {
        let mut header = vec![0u8; 92];
        header[0..8].copy_from_slice(b"EFI PART");
        header[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        header[12..16].copy_from_slice(&92u32.to_le_bytes());
        header[24..32].copy_from_slice(&current.to_le_bytes());
        header[32..40].copy_from_slice(&backup.to_le_bytes());
        header[40..48].copy_from_slice(&(2 + GPT_ENTRY_SECTORS).to_le_bytes());
        header[48..56].copy_from_slice(&(backup_entries_lba - 1).to_le_bytes());
        header[56..72].copy_from_slice(&disk_guid);
        header[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        header[80..84].copy_from_slice(&(GPT_ENTRIES as u32).to_le_bytes());
        header[84..88].copy_from_slice(&(GPT_ENTRY_SIZE as u32).to_le_bytes());
        header[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32(&header);
        header[16..20].copy_from_slice(&crc.to_le_bytes());
        header
    };
    let at = |lba: u64| (lba * SECTOR) as usize;
    let primary = header(1, backup_header_lba, 2);
    disk[at(1)..at(1) + 92].copy_from_slice(&primary);
    disk[at(2)..at(2) + entries.len()].copy_from_slice(&entries);
    disk[at(first)..at(first) + partition.len()].copy_from_slice(partition);
    disk[at(backup_entries_lba)..at(backup_entries_lba) + entries.len()].copy_from_slice(&entries);
    let backup = header(backup_header_lba, 1, backup_entries_lba);
    disk[at(backup_header_lba)..at(backup_header_lba) + 92].copy_from_slice(&backup);
    Ok(disk)
}

// -------------------------------------------------------------- command

/// Where a release image's token comes from.
pub const TOKEN_SOURCES: &str = "RTEDGE_TOKEN (the token) or RTEDGE_TOKEN_FILE (a file holding it)";

/// The token of a release image: `RTEDGE_TOKEN`, else the first line of
/// `RTEDGE_TOKEN_FILE`; never the development token.
pub fn release_token() -> Result<String> {
    let token = match std::env::var("RTEDGE_TOKEN").ok().filter(|token| !token.is_empty()) {
        Some(token) => token,
        None => match std::env::var_os("RTEDGE_TOKEN_FILE").filter(|path| !path.is_empty()) {
            Some(path) => std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read RTEDGE_TOKEN_FILE {}", PathBuf::from(&path).display()))?
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string(),
            None => bail!("a release disk image needs a control-plane token: set {TOKEN_SOURCES}"),
        },
    };
    ensure!(token.len() >= 16, "the release token must have at least 16 characters");
    ensure!(
        token.chars().all(|c| c.is_ascii_alphanumeric() || "-_.+/=".contains(c)),
        "the release token may hold only letters, digits and -_.+/="
    );
    Ok(token)
}

/// A small default boot archive (tar) when none is given: build facts the
/// appliance can show with `FILES`/`KMORE`.
fn default_archive(out_dir: &Path, release: bool) -> Result<PathBuf> {
    let tree = out_dir.join("archive");
    let _ = std::fs::remove_dir_all(&tree);
    std::fs::create_dir_all(tree.join("etc"))?;
    std::fs::write(
        tree.join("etc/rtedge-image"),
        format!("rtedge {} disk image ({})\n", env!("CARGO_PKG_VERSION"), if release { "release" } else { "development" }),
    )?;
    let archive = out_dir.join("boot.tar");
    run(Command::new("tar").args(["--format=ustar", "--owner=0", "--group=0", "-C"]).arg(&tree).args(["-cf"]).arg(&archive).args(["etc"]))?;
    let _ = std::fs::remove_dir_all(&tree);
    Ok(archive)
}

/// `rtedge-image disk [--release]`: builds the appliance and its images, prints their sizes.
pub fn command(layout: &Layout, profiles: &Profiles, release: bool) -> Result<Media> {
    let profile = profiles.get("appliance")?;
    let token = if release { Some(release_token()?) } else { None };
    println!("rtedge-image: building `appliance` for the disk images");
    let image = image::build(layout, profile)?;
    let token = match token {
        Some(token) => token,
        None => image.token.clone().context("the appliance image has no development token")?,
    };
    let out_dir = layout.output_dir().join("disk");
    std::fs::create_dir_all(&out_dir)?;
    let archive = match std::env::var_os("RTEDGE_INITRD").filter(|path| !path.is_empty()) {
        Some(path) => PathBuf::from(path),
        None => default_archive(&out_dir, release)?,
    };
    let cmdline = crate::commands::compose_cmdline(&profile.spec.cmdline, None, Some(&token));
    let media = build_media(&DiskSpec { kernel: image.path.clone(), cmdline, archive, out_dir })?;
    println!(
        "rtedge-image: disk images ({}; token {}):",
        if release { "release" } else { "development" },
        if release { "from RTEDGE_TOKEN/RTEDGE_TOKEN_FILE" } else { "the development token target/rtedge/dev.token" }
    );
    for (path, bytes) in media.sizes() {
        let verdict = if path == media.kernel || bytes <= TARGET_BYTES { "" } else { "  (over the 8 MiB target)" };
        println!("  {:<60} {:>6} KiB{verdict}", path.display(), bytes.div_ceil(1024));
    }
    println!("  boot: BIOS or UEFI from the ISO; UEFI from rtedge.raw / rtedge.qcow2 (q35, OVMF)");
    Ok(media)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn efi_system_partition_guid_is_mixed_endian_on_disk() {
        let bytes = guid_bytes(EFI_SYSTEM_PARTITION).expect("valid");
        assert_eq!(bytes, [0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b]);
    }

    #[test]
    fn gpt_disk_has_valid_headers_and_the_partition_at_one_mib() {
        let partition = vec![0xa5u8; 4 << 20];
        let disk = gpt_disk(&partition, 7).expect("built");
        assert_eq!(disk.len() % (1 << 20), 0);
        assert_eq!(&disk[510..512], &[0x55, 0xaa]);
        assert_eq!(disk[446 + 4], 0xee);
        let header = &disk[512..512 + 92];
        assert_eq!(&header[..8], b"EFI PART");
        let mut zeroed = header.to_vec();
        zeroed[16..20].fill(0);
        assert_eq!(u32::from_le_bytes(header[16..20].try_into().expect("4")), crc32(&zeroed), "header CRC");
        let entries = &disk[1024..1024 + 16384];
        assert_eq!(u32::from_le_bytes(header[88..92].try_into().expect("4")), crc32(entries), "entries CRC");
        assert_eq!(u64::from_le_bytes(entries[32..40].try_into().expect("8")), 2048);
        assert_eq!(&disk[2048 * 512..2048 * 512 + 4], &[0xa5; 4]);
        let backup_lba = u64::from_le_bytes(header[32..40].try_into().expect("8"));
        assert_eq!(backup_lba, disk.len() as u64 / 512 - 1);
        let backup = &disk[(backup_lba * 512) as usize..(backup_lba * 512) as usize + 92];
        assert_eq!(&backup[..8], b"EFI PART");
        assert_eq!(u64::from_le_bytes(backup[24..32].try_into().expect("8")), backup_lba);
    }

    #[test]
    fn grub_config_boots_multiboot2_with_the_archive_and_no_wait() {
        let config = grub_config("log=info auth=abc", true);
        assert!(config.contains("set timeout=0\n"));
        assert!(config.contains("multiboot2 /rtedge/rtedge.elf log=info auth=abc\n"));
        assert!(config.contains("module2 /rtedge/boot.archive"));
        assert!(config.contains("search --no-floppy --file --set=root /rtedge/rtedge.elf"));
    }

    #[test]
    fn stripping_check_sees_changed_segments() {
        // A minimal ELF64 header with one PT_LOAD of 4 bytes at offset 120.
        let mut elf = vec![0u8; 124];
        elf[32..40].copy_from_slice(&64u64.to_le_bytes());
        elf[54..56].copy_from_slice(&56u16.to_le_bytes());
        elf[56..58].copy_from_slice(&1u16.to_le_bytes());
        elf[64..68].copy_from_slice(&1u32.to_le_bytes());
        elf[72..80].copy_from_slice(&120u64.to_le_bytes());
        elf[80..88].copy_from_slice(&0x20_0000u64.to_le_bytes());
        elf[96..104].copy_from_slice(&4u64.to_le_bytes());
        elf[120..124].copy_from_slice(b"code");
        let mut changed = elf.clone();
        changed[121] = b'X';
        assert_eq!(loaded_bytes(&elf), Some(vec![(0x20_0000, b"code".to_vec())]));
        assert_ne!(loaded_bytes(&elf), loaded_bytes(&changed));
    }
}
