//! Read-only files for kernel threads (the seeds' `kmore`): files handed to
//! the image at boot and, under uhyve, host files the hypervisor maps in.
//!
//! - **Boot archives.** Every loader module (QEMU `-initrd` through the PVH
//!   module list; an initrd uhyve announces in its device tree) that is a
//!   cpio "newc" archive (magic `070701`/`070702`) or a ustar tar archive
//!   (`ustar` at byte 257) is indexed once, on first use. The bytes stay
//!   where the loader put them (identity mapped, kept out of the heap by
//!   `memory::init`, never written): a file is a slice of them, never a
//!   copy. Later entries and later modules win over earlier ones, as with
//!   Linux's initramfs. Parent directories an archive leaves implicit exist.
//! - **uhyve host files** (`uhyve --file-mapping host:guest`), opened, read
//!   and closed with uhyve interface version 1 hypercalls: FileOpen (port
//!   0x440), FileRead (0x500), FileLseek (0x580), FileClose (0x480). The
//!   32-bit value written to the port is the *physical* address of a
//!   parameter block, so blocks, paths and read buffers live on the heap,
//!   which is identity mapped (thread stacks are not). Interface version 1
//!   has no directory listing: [`list`] shows the boot archives only.
//!
//! A lookup tries the boot archives first, then uhyve. Paths are taken from
//! `/` whether or not they start with it; empty and `.` components are
//! ignored and `..` goes up one level (never above `/`).
//!
//! Thread context only: opening may allocate and reading may exit to the
//! hypervisor. Real-time threads and interrupt handlers never call this.

use alloc::borrow::ToOwned;
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use rtedge_arch::boot::BootPath;

use crate::thread::Mutex;
use crate::{boot, context};

/// What a failed file operation reports. Each variant names the path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileError {
    /// Nothing at that path.
    NotFound(String),
    /// The path names a directory where a file was wanted.
    IsADirectory(String),
    /// The path names a file where a directory was wanted.
    NotADirectory(String),
    /// The lookup or the read failed for another reason.
    Io(String, IoError),
}

/// The reason behind [`FileError::Io`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoError {
    /// The host (uhyve) returned this error number (Hermit/Linux numbering).
    Host(i32),
    /// A symbolic link chain was longer than [`MAX_LINK_DEPTH`] or looped.
    TooManyLinks,
    /// A parameter block was not below 4 GiB (uhyve v1 passes 32-bit addresses).
    AddressTooHigh,
    /// Called from an RT thread or an interrupt handler.
    WrongContext,
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IoError::Host(errno) => write!(f, "host error {errno} ({})", errno_name(*errno)),
            IoError::TooManyLinks => f.write_str("too many levels of symbolic links"),
            IoError::AddressTooHigh => f.write_str("hypercall block above 4 GiB"),
            IoError::WrongContext => f.write_str("file access from RT or interrupt context"),
        }
    }
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileError::NotFound(path) => write!(f, "no such file: {path}"),
            FileError::IsADirectory(path) => write!(f, "is a directory: {path}"),
            FileError::NotADirectory(path) => write!(f, "not a directory: {path}"),
            FileError::Io(path, error) => write!(f, "cannot read {path}: {error}"),
        }
    }
}

fn errno_name(errno: i32) -> &'static str {
    match errno {
        1 => "EPERM",
        2 => "ENOENT",
        5 => "EIO",
        9 => "EBADF",
        13 => "EACCES",
        14 => "EFAULT",
        20 => "ENOTDIR",
        21 => "EISDIR",
        22 => "EINVAL",
        30 => "EROFS",
        _ => "unknown",
    }
}

pub type Result<T> = core::result::Result<T, FileError>;

/// Longest chain of symbolic links followed.
pub const MAX_LINK_DEPTH: usize = 8;

/// What a path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    File,
    Directory,
    Symlink,
}

impl FileKind {
    pub fn name(self) -> &'static str {
        match self {
            FileKind::File => "file",
            FileKind::Directory => "dir",
            FileKind::Symlink => "symlink",
        }
    }
}

/// One entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// The name inside the directory (no `/`).
    pub name: String,
    /// The full path, starting with `/`.
    pub path: String,
    pub kind: FileKind,
    /// Bytes (0 for directories; the target's length for symbolic links).
    pub size: u64,
}

/// Archive formats a boot module may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// cpio "new ASCII" (`070701`) or its CRC variant (`070702`).
    CpioNewc,
    /// POSIX ustar or GNU tar.
    Ustar,
}

impl ArchiveFormat {
    pub fn name(self) -> &'static str {
        match self {
            ArchiveFormat::CpioNewc => "cpio newc",
            ArchiveFormat::Ustar => "ustar",
        }
    }

    /// The format `bytes` start with, if any.
    pub fn detect(bytes: &[u8]) -> Option<ArchiveFormat> {
        if bytes.starts_with(b"070701") || bytes.starts_with(b"070702") {
            Some(ArchiveFormat::CpioNewc)
        } else if bytes.get(257..262) == Some(&b"ustar"[..]) {
            Some(ArchiveFormat::Ustar)
        } else {
            None
        }
    }
}

/// Why an archive could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveError {
    /// Neither cpio newc nor ustar.
    UnknownFormat,
    /// A header or its data runs past the end; `offset` is the header's.
    Truncated { offset: usize },
    /// A header is malformed (bad magic, number or checksum).
    BadHeader { offset: usize },
}

impl fmt::Display for ArchiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArchiveError::UnknownFormat => f.write_str("not a cpio newc or ustar archive"),
            ArchiveError::Truncated { offset } => write!(f, "truncated at the header at byte {offset}"),
            ArchiveError::BadHeader { offset } => write!(f, "malformed header at byte {offset}"),
        }
    }
}

/// One member of an archive, as parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveEntry<'a> {
    /// The normalised path (no leading `/`; `""` is the root).
    pub path: String,
    pub kind: FileKind,
    /// The contents (files), or nothing.
    pub data: &'a [u8],
    /// For a symbolic link its target; for a tar hard link the linked path.
    pub link: Option<String>,
}

/// Parses a whole archive (either format) into its members, in order.
/// Device nodes, FIFOs and tar extension headers are consumed, not listed.
pub fn parse_archive(bytes: &[u8]) -> core::result::Result<(ArchiveFormat, Vec<ArchiveEntry<'_>>), ArchiveError> {
    match ArchiveFormat::detect(bytes) {
        Some(ArchiveFormat::CpioNewc) => parse_cpio(bytes).map(|entries| (ArchiveFormat::CpioNewc, entries)),
        Some(ArchiveFormat::Ustar) => parse_tar(bytes).map(|entries| (ArchiveFormat::Ustar, entries)),
        None => Err(ArchiveError::UnknownFormat),
    }
}

const CPIO_HEADER: usize = 110;
const CPIO_TRAILER: &[u8] = b"TRAILER!!!";
const MODE_TYPE: u32 = 0o170_000;
const MODE_DIRECTORY: u32 = 0o040_000;
const MODE_REGULAR: u32 = 0o100_000;
const MODE_SYMLINK: u32 = 0o120_000;

fn hex_field(bytes: &[u8]) -> Option<u32> {
    let text = core::str::from_utf8(bytes).ok()?;
    u32::from_str_radix(text, 16).ok()
}

fn parse_cpio(bytes: &[u8]) -> core::result::Result<Vec<ArchiveEntry<'_>>, ArchiveError> {
    let mut entries = Vec::new();
    let mut position = 0usize;
    loop {
        let header = bytes.get(position..position + CPIO_HEADER).ok_or(ArchiveError::Truncated { offset: position })?;
        if !(header.starts_with(b"070701") || header.starts_with(b"070702")) {
            return Err(ArchiveError::BadHeader { offset: position });
        }
        let field = |index: usize| hex_field(&header[6 + 8 * index..14 + 8 * index]).ok_or(ArchiveError::BadHeader { offset: position });
        let mode = field(1)?;
        let file_size = field(6)? as usize;
        let name_size = field(11)? as usize;
        if name_size == 0 {
            return Err(ArchiveError::BadHeader { offset: position });
        }
        let name_start = position + CPIO_HEADER;
        let name_end = name_start.checked_add(name_size).ok_or(ArchiveError::Truncated { offset: position })?;
        // The name size counts the terminating NUL.
        let name = bytes.get(name_start..name_end - 1).ok_or(ArchiveError::Truncated { offset: position })?;
        let data_start = name_end.next_multiple_of(4);
        let data_end = data_start.checked_add(file_size).ok_or(ArchiveError::Truncated { offset: position })?;
        let data = bytes.get(data_start..data_end).ok_or(ArchiveError::Truncated { offset: position })?;
        if name == CPIO_TRAILER {
            return Ok(entries);
        }
        let path = normalize(&String::from_utf8_lossy(name));
        let entry = match mode & MODE_TYPE {
            MODE_REGULAR => Some(ArchiveEntry { path, kind: FileKind::File, data, link: None }),
            MODE_DIRECTORY => Some(ArchiveEntry { path, kind: FileKind::Directory, data: &[], link: None }),
            MODE_SYMLINK => {
                Some(ArchiveEntry { path, kind: FileKind::Symlink, data: &[], link: Some(String::from_utf8_lossy(data).into_owned()) })
            }
            _ => None,
        };
        // `.` (the archive's own root) normalises to the root: not an entry.
        if let Some(entry) = entry.filter(|entry| !entry.path.is_empty()) {
            entries.push(entry);
        }
        position = data_end.next_multiple_of(4);
    }
}

const TAR_BLOCK: usize = 512;

/// A NUL-terminated (or full-width) text field.
fn text_field(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

/// An octal number field (spaces and NULs around it allowed), or GNU's
/// base-256 form (first byte's high bit set).
fn tar_number(bytes: &[u8]) -> Option<u64> {
    if bytes.first().is_some_and(|&b| b & 0x80 != 0) {
        let mut value: u64 = u64::from(bytes[0] & 0x7f);
        for &byte in &bytes[1..] {
            value = value.checked_mul(256)?.checked_add(u64::from(byte))?;
        }
        return Some(value);
    }
    let text = core::str::from_utf8(text_field(bytes)).ok()?.trim_matches(|c| c == ' ' || c == '\0');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

fn tar_checksum_ok(block: &[u8]) -> bool {
    let Some(stored) = tar_number(&block[148..156]) else { return false };
    let sum: u64 = block.iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { u64::from(b' ') } else { u64::from(b) }).sum();
    sum == stored
}

/// The `path` and `linkpath` records of a pax extended header.
fn pax_records(data: &[u8]) -> (Option<String>, Option<String>) {
    let mut path = None;
    let mut link = None;
    let mut rest = data;
    while !rest.is_empty() {
        // "<length> <key>=<value>\n", the length counting the whole record.
        let Some(space) = rest.iter().position(|&b| b == b' ') else { break };
        let Some(length) = core::str::from_utf8(&rest[..space]).ok().and_then(|text| text.parse::<usize>().ok()) else { break };
        let Some(record) = rest.get(space + 1..length.max(space + 1)) else { break };
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Some(equals) = record.iter().position(|&b| b == b'=') {
            let value = String::from_utf8_lossy(&record[equals + 1..]).into_owned();
            match &record[..equals] {
                b"path" => path = Some(value),
                b"linkpath" => link = Some(value),
                _ => {}
            }
        }
        rest = &rest[length.max(space + 1).min(rest.len())..];
    }
    (path, link)
}

fn parse_tar(bytes: &[u8]) -> core::result::Result<Vec<ArchiveEntry<'_>>, ArchiveError> {
    let mut entries = Vec::new();
    let mut position = 0usize;
    // Names carried over from GNU long-name or pax headers to the next entry.
    let mut next_path: Option<String> = None;
    let mut next_link: Option<String> = None;
    while let Some(block) = bytes.get(position..position + TAR_BLOCK) {
        if block.iter().all(|&b| b == 0) {
            break;
        }
        if !tar_checksum_ok(block) {
            return Err(ArchiveError::BadHeader { offset: position });
        }
        let size = tar_number(&block[124..136]).ok_or(ArchiveError::BadHeader { offset: position })? as usize;
        let data_start = position + TAR_BLOCK;
        let data_end = data_start.checked_add(size).ok_or(ArchiveError::Truncated { offset: position })?;
        let data = bytes.get(data_start..data_end).ok_or(ArchiveError::Truncated { offset: position })?;
        let type_flag = block[156];
        let mut name = String::from_utf8_lossy(text_field(&block[0..100])).into_owned();
        if &block[257..262] == b"ustar" {
            let prefix = text_field(&block[345..500]);
            if !prefix.is_empty() {
                name = alloc::format!("{}/{}", String::from_utf8_lossy(prefix), name);
            }
        }
        let link_name = String::from_utf8_lossy(text_field(&block[157..257])).into_owned();
        match type_flag {
            b'L' => next_path = Some(String::from_utf8_lossy(text_field(data)).into_owned()),
            b'K' => next_link = Some(String::from_utf8_lossy(text_field(data)).into_owned()),
            b'x' => {
                let (path, link) = pax_records(data);
                next_path = path.or(next_path);
                next_link = link.or(next_link);
            }
            b'g' => {}
            _ => {
                let path = normalize(&next_path.take().unwrap_or(name));
                let link = next_link.take().unwrap_or(link_name);
                let entry = match type_flag {
                    b'0' | 0 | b'7' => Some(ArchiveEntry { path, kind: FileKind::File, data, link: None }),
                    b'5' => Some(ArchiveEntry { path, kind: FileKind::Directory, data: &[], link: None }),
                    b'2' => Some(ArchiveEntry { path, kind: FileKind::Symlink, data: &[], link: Some(link) }),
                    // A hard link names another member from the archive root.
                    b'1' => Some(ArchiveEntry { path, kind: FileKind::Symlink, data: &[], link: Some(alloc::format!("/{link}")) }),
                    _ => None,
                };
                if let Some(entry) = entry.filter(|entry| !entry.path.is_empty()) {
                    entries.push(entry);
                }
            }
        }
        position = data_start + size.next_multiple_of(TAR_BLOCK);
    }
    Ok(entries)
}

/// Normalises a path: components joined by `/`, no leading or trailing
/// `/`, `.` and empty components dropped, `..` resolved (never above the
/// root). The root is `""`.
pub fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.join("/")
}

fn display_path(normalized: &str) -> String {
    alloc::format!("/{normalized}")
}

fn parent(normalized: &str) -> &str {
    normalized.rfind('/').map_or("", |slash| &normalized[..slash])
}

/// A member of the boot archives' index.
#[derive(Clone)]
struct Node {
    kind: FileKind,
    data: &'static [u8],
    link: Option<String>,
}

/// A boot module and what was found in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootArchive {
    /// Index in the loader's module list.
    pub module: usize,
    pub start: u64,
    pub size: u64,
    /// The format, or why it was not used.
    pub format: core::result::Result<ArchiveFormat, ArchiveError>,
    pub entries: usize,
}

struct Index {
    nodes: BTreeMap<String, Node>,
    archives: Vec<BootArchive>,
}

impl Index {
    fn build() -> Index {
        let mut nodes = BTreeMap::new();
        let mut archives = Vec::new();
        nodes.insert(String::new(), Node { kind: FileKind::Directory, data: &[], link: None });
        for (module, loaded) in boot::info().modules().iter().enumerate() {
            let Ok(size) = usize::try_from(loaded.size) else { continue };
            // The loader placed the module in RAM, which the kernel identity
            // maps; `memory::init` keeps module ranges out of the heap.
            // SAFETY: nothing writes those bytes, so they stay valid and unchanged.
            let bytes: &'static [u8] = unsafe { core::slice::from_raw_parts(loaded.start as *const u8, size) };
            let parsed = parse_archive(bytes);
            let (format, count) = match parsed {
                Ok((format, entries)) => {
                    let count = entries.len();
                    for entry in entries {
                        let node = Node { kind: entry.kind, data: entry.data, link: entry.link };
                        nodes.insert(entry.path, node);
                    }
                    (Ok(format), count)
                }
                Err(error) => (Err(error), 0),
            };
            archives.push(BootArchive { module, start: loaded.start, size: loaded.size, format, entries: count });
        }
        // Directories an archive only implies (`a/b/c` without `a/`).
        let implied: Vec<String> = nodes
            .keys()
            .flat_map(|path| {
                let mut parents = Vec::new();
                let mut current = parent(path);
                while !current.is_empty() {
                    parents.push(current.to_owned());
                    current = parent(current);
                }
                parents
            })
            .collect();
        for path in implied {
            nodes.entry(path).or_insert(Node { kind: FileKind::Directory, data: &[], link: None });
        }
        Index { nodes, archives }
    }

    /// Follows symbolic links from `path` (normalised) to a node.
    fn resolve(&self, display: &str, path: &str) -> Result<Option<(String, &Node)>> {
        let mut current = String::from(path);
        for _ in 0..=MAX_LINK_DEPTH {
            let Some(node) = self.nodes.get(&current) else { return Ok(None) };
            match (&node.kind, &node.link) {
                (FileKind::Symlink, Some(target)) => {
                    current = if target.starts_with('/') {
                        normalize(target)
                    } else {
                        normalize(&alloc::format!("{}/{}", parent(&current), target))
                    };
                }
                _ => return Ok(Some((current, node))),
            }
        }
        Err(FileError::Io(String::from(display), IoError::TooManyLinks))
    }
}

/// Built on first use; never freed (the boot files do not change).
static INDEX: Mutex<Option<&'static Index>> = Mutex::new(None);

fn index() -> &'static Index {
    let mut slot = INDEX.lock();
    match *slot {
        Some(index) => index,
        None => {
            let built: &'static Index = Box::leak(Box::new(Index::build()));
            for archive in &built.archives {
                match archive.format {
                    Ok(format) => log::debug!(
                        "files: boot module {} ({} bytes): {}, {} entries",
                        archive.module,
                        archive.size,
                        format.name(),
                        archive.entries
                    ),
                    Err(error) => log::warn!("files: boot module {} ({} bytes) ignored: {error}", archive.module, archive.size),
                }
            }
            *slot = Some(built);
            built
        }
    }
}

/// The boot modules and what was found in them.
pub fn boot_archives() -> Vec<BootArchive> {
    index().archives.clone()
}

/// Whether uhyve's host files are reachable (the image runs under uhyve).
pub fn host_files_available() -> bool {
    boot::info().path == BootPath::Hermit
}

fn check_context(display: &str) -> Result<()> {
    if context::in_realtime_thread() || context::in_interrupt() || crate::softirq::in_softirq() {
        return Err(FileError::Io(String::from(display), IoError::WrongContext));
    }
    Ok(())
}

enum Source {
    Archive { data: &'static [u8] },
    Host { descriptor: i32, size: u64 },
}

/// An open, read-only file.
pub struct File {
    path: String,
    source: Source,
    position: u64,
}

impl fmt::Debug for File {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("File").field("path", &self.path).field("size", &self.size()).field("position", &self.position).finish()
    }
}

/// Opens the file at `path` for reading: boot archives first, then (under
/// uhyve) the host's mapped files. Symbolic links in archives are followed.
pub fn open(path: &str) -> Result<File> {
    check_context(path)?;
    let normalized = normalize(path);
    let display = display_path(&normalized);
    if let Some((_, node)) = index().resolve(&display, &normalized)? {
        return match node.kind {
            FileKind::File => Ok(File { path: display, source: Source::Archive { data: node.data }, position: 0 }),
            _ => Err(FileError::IsADirectory(display)),
        };
    }
    if host_files_available() {
        return host::open(&display).map(|(descriptor, size)| File {
            path: display,
            source: Source::Host { descriptor, size },
            position: 0,
        });
    }
    Err(FileError::NotFound(display))
}

impl File {
    /// Reads from the current position into `buffer`; returns the bytes
    /// read, 0 at the end of the file.
    pub fn read(&mut self, buffer: &mut [u8]) -> Result<usize> {
        check_context(&self.path)?;
        let count = match &self.source {
            Source::Archive { data } => {
                let start = usize::try_from(self.position).unwrap_or(usize::MAX).min(data.len());
                let count = buffer.len().min(data.len() - start);
                buffer[..count].copy_from_slice(&data[start..start + count]);
                count
            }
            Source::Host { descriptor, .. } => host::read(*descriptor, buffer).map_err(|error| FileError::Io(self.path.clone(), error))?,
        };
        self.position += count as u64;
        Ok(count)
    }

    /// Reads until `buffer` is full or the file ends; returns the bytes read.
    pub fn read_full(&mut self, buffer: &mut [u8]) -> Result<usize> {
        let mut filled = 0;
        while filled < buffer.len() {
            let count = self.read(&mut buffer[filled..])?;
            if count == 0 {
                break;
            }
            filled += count;
        }
        Ok(filled)
    }

    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        match &self.source {
            Source::Archive { data } => data.len() as u64,
            Source::Host { size, .. } => *size,
        }
    }

    /// The path it was opened with (normalised, starting with `/`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether it comes from a boot archive (else from the uhyve host).
    pub fn is_boot_file(&self) -> bool {
        matches!(self.source, Source::Archive { .. })
    }
}

impl Drop for File {
    fn drop(&mut self) {
        if let Source::Host { descriptor, .. } = self.source {
            host::close(descriptor);
        }
    }
}

/// Reads a whole file of at most `limit` bytes (longer files are cut).
pub fn read_to_vec(path: &str, limit: usize) -> Result<Vec<u8>> {
    let mut file = open(path)?;
    let wanted = usize::try_from(file.size()).unwrap_or(usize::MAX).min(limit);
    let mut contents = vec![0u8; wanted];
    let count = file.read_full(&mut contents)?;
    contents.truncate(count);
    Ok(contents)
}

/// Lists directory `dir` of the boot archives, sorted by name. (uhyve's
/// interface version 1 cannot list host directories.)
pub fn list(dir: &str) -> Result<Vec<DirEntry>> {
    check_context(dir)?;
    let normalized = normalize(dir);
    let display = display_path(&normalized);
    let index = index();
    let Some((resolved, node)) = index.resolve(&display, &normalized)? else {
        return Err(FileError::NotFound(display));
    };
    if node.kind != FileKind::Directory {
        return Err(FileError::NotADirectory(display));
    }
    let prefix = if resolved.is_empty() { String::new() } else { alloc::format!("{resolved}/") };
    let mut entries = Vec::new();
    for (path, node) in index.nodes.range(prefix.clone()..) {
        let Some(name) = path.strip_prefix(prefix.as_str()) else { break };
        if name.is_empty() || name.contains('/') {
            continue;
        }
        let size = match node.kind {
            FileKind::File => node.data.len() as u64,
            FileKind::Symlink => node.link.as_ref().map_or(0, |link| link.len() as u64),
            FileKind::Directory => 0,
        };
        entries.push(DirEntry { name: String::from(name), path: display_path(path), kind: node.kind, size });
    }
    Ok(entries)
}

/// uhyve interface version 1 file hypercalls.
mod host {
    use alloc::boxed::Box;
    use alloc::string::String;
    use alloc::vec;
    use alloc::vec::Vec;

    use super::{FileError, IoError};

    const PORT_OPEN: u16 = 0x440;
    const PORT_CLOSE: u16 = 0x480;
    const PORT_READ: u16 = 0x500;
    const PORT_LSEEK: u16 = 0x580;

    // Hermit's numbering (the same as Linux x86_64's).
    const O_RDONLY: i32 = 0;
    const O_DIRECTORY: i32 = 0o200_000;
    const SEEK_SET: i32 = 0;
    const SEEK_END: i32 = 2;
    const ENOENT: i32 = 2;
    const EISDIR: i32 = 21;
    const EINVAL: i32 = 22;

    /// Largest read handed to the host at once (the heap bounce buffer).
    const CHUNK: usize = 64 * 1024;

    // The parameter blocks, laid out as uhyve-interface 0.3's `v1::parameters`.
    #[repr(C, packed)]
    struct OpenParams {
        name: u64,
        flags: i32,
        mode: i32,
        ret: i32,
    }

    #[repr(C, packed)]
    struct ReadParams {
        fd: i32,
        buffer: u64,
        len: u64,
        ret: i64,
    }

    #[repr(C, packed)]
    struct CloseParams {
        fd: i32,
        ret: i32,
    }

    #[repr(C, packed)]
    struct LseekParams {
        fd: i32,
        offset: i64,
        whence: i32,
    }

    /// Performs hypercall `port` with the parameter block `block`, which
    /// uhyve reads and writes at its physical address.
    fn hypercall<T>(port: u16, block: &mut Box<T>) -> Result<(), IoError> {
        let address = block.as_mut() as *mut T as u64;
        let address = u32::try_from(address).map_err(|_| IoError::AddressTooHigh)?;
        // The block is on the heap, which is identity mapped, so its virtual
        // address is the physical address uhyve reads. The ports are uhyve's
        // (the image only calls this when booted by uhyve).
        // SAFETY: the block is borrowed mutably for the call: nothing else
        // touches it while the hypervisor writes its result.
        unsafe { rtedge_arch::cpu::outl(port, address) };
        // The hypervisor wrote the block behind the compiler's back; the
        // port write is a compiler barrier (`outl` is not `nomem`), and the
        // callers read the result with `read_volatile`.
        Ok(())
    }

    fn read_i32(field: *const i32) -> i32 {
        // SAFETY: `field` points into a live parameter block; packed fields
        // need an unaligned read.
        unsafe { core::ptr::read_unaligned(field) }
    }

    fn open_raw(path: &[u8], flags: i32) -> Result<i32, IoError> {
        let mut name: Vec<u8> = Vec::with_capacity(path.len() + 1);
        name.extend_from_slice(path);
        name.push(0);
        let name_address = u32::try_from(name.as_ptr() as u64).map_err(|_| IoError::AddressTooHigh)?;
        let mut block = Box::new(OpenParams { name: u64::from(name_address), flags, mode: 0, ret: -1 });
        hypercall(PORT_OPEN, &mut block)?;
        Ok(read_i32(&raw const block.ret))
    }

    fn seek(descriptor: i32, offset: i64, whence: i32) -> Result<i64, IoError> {
        let mut block = Box::new(LseekParams { fd: descriptor, offset, whence });
        hypercall(PORT_LSEEK, &mut block)?;
        // SAFETY: as in `read_i32`, for the i64 field.
        let result = unsafe { core::ptr::read_unaligned(&raw const block.offset) };
        if result < 0 { Err(IoError::Host(5)) } else { Ok(result) }
    }

    fn read_raw(descriptor: i32, bounce: &mut [u8]) -> Result<usize, IoError> {
        let address = u32::try_from(bounce.as_mut_ptr() as u64).map_err(|_| IoError::AddressTooHigh)?;
        let mut block = Box::new(ReadParams { fd: descriptor, buffer: u64::from(address), len: bounce.len() as u64, ret: -1 });
        hypercall(PORT_READ, &mut block)?;
        // SAFETY: as in `read_i32`, for the i64 field.
        let result = unsafe { core::ptr::read_unaligned(&raw const block.ret) };
        if result < 0 {
            Err(IoError::Host(i32::try_from(-result).unwrap_or(5)))
        } else {
            Ok(usize::try_from(result).unwrap_or(0).min(bounce.len()))
        }
    }

    /// Opens `display` (a path starting with `/`) on the host; returns the
    /// descriptor and the size.
    pub(super) fn open(display: &str) -> Result<(i32, u64), FileError> {
        let io = |error| FileError::Io(String::from(display), error);
        let descriptor = open_raw(display.as_bytes(), O_RDONLY).map_err(io)?;
        if descriptor == -ENOENT {
            return Err(FileError::NotFound(String::from(display)));
        }
        if descriptor == -EINVAL {
            // uhyve refuses to open its own (virtual) directories as files.
            let directory = open_raw(display.as_bytes(), O_RDONLY | O_DIRECTORY).map_err(io)?;
            if directory >= 0 {
                close(directory);
                return Err(FileError::IsADirectory(String::from(display)));
            }
        }
        if descriptor < 0 {
            return Err(io(IoError::Host(-descriptor)));
        }
        // A mapped host directory opens fine; reading it fails with EISDIR.
        // On the heap like every buffer handed to uhyve (identity mapped).
        let mut probe = Box::new([0u8; 1]);
        match read_raw(descriptor, &mut probe[..0]) {
            Err(IoError::Host(EISDIR)) => {
                close(descriptor);
                return Err(FileError::IsADirectory(String::from(display)));
            }
            Err(error) => {
                close(descriptor);
                return Err(io(error));
            }
            Ok(_) => {}
        }
        let size = seek(descriptor, 0, SEEK_END).and_then(|size| seek(descriptor, 0, SEEK_SET).map(|_| size));
        match size {
            Ok(size) => Ok((descriptor, size as u64)),
            Err(error) => {
                close(descriptor);
                Err(io(error))
            }
        }
    }

    /// Reads into `buffer` through a heap bounce buffer (the caller's
    /// buffer may be on a thread stack, which is not identity mapped).
    pub(super) fn read(descriptor: i32, buffer: &mut [u8]) -> Result<usize, IoError> {
        if buffer.is_empty() {
            return Ok(0);
        }
        let mut bounce = vec![0u8; buffer.len().min(CHUNK)];
        let count = read_raw(descriptor, &mut bounce)?;
        buffer[..count].copy_from_slice(&bounce[..count]);
        Ok(count)
    }

    pub(super) fn close(descriptor: i32) {
        let mut block = Box::new(CloseParams { fd: descriptor, ret: 0 });
        if hypercall(PORT_CLOSE, &mut block).is_ok() && read_i32(&raw const block.ret) < 0 {
            log::debug!("files: closing host descriptor {descriptor} failed");
        }
    }
}
