//! Building a profile's kernel image: cargo for `x86_64-unknown-none`, a
//! copy at `target/rtedge/<profile>.elf` with the ELF OS/ABI byte set to
//! Hermit's 0xff (uhyve checks it; QEMU ignores it), and the control-plane
//! token.

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

use crate::profile::Profile;

pub const KERNEL_TARGET: &str = "x86_64-unknown-none";
/// ELF `e_ident[EI_OSABI]`.
const EI_OSABI: usize = 7;
/// ELFOSABI_STANDALONE, the Hermit convention uhyve requires.
const OSABI_STANDALONE: u8 = 0xff;
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const EM_X86_64: u16 = 62;
const TOKEN_HEX_CHARS: usize = 32;

/// Where things live: the workspace and its target directory.
#[derive(Clone, Debug)]
pub struct Layout {
    pub root: PathBuf,
    pub target: PathBuf,
}

impl Layout {
    /// The workspace this runner was built from; `CARGO_TARGET_DIR` is honoured.
    pub fn discover() -> Self {
        let images = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = images.parent().unwrap_or(images).to_path_buf();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .filter(|dir| !dir.is_empty())
            .map(|dir| root.join(dir))
            .unwrap_or_else(|| root.join("target"));
        Layout { root, target }
    }

    pub fn profiles_dir(&self) -> PathBuf {
        self.root.join("images/profiles")
    }

    /// `target/rtedge`: images, logs and the development token.
    pub fn output_dir(&self) -> PathBuf {
        self.target.join("rtedge")
    }

    pub fn image_path(&self, profile: &Profile) -> PathBuf {
        self.output_dir().join(format!("{}.elf", profile.name))
    }

    fn cargo_output(&self, profile: &Profile) -> PathBuf {
        self.target.join(KERNEL_TARGET).join("release").join(&profile.spec.bin)
    }

    pub fn token_path(&self) -> PathBuf {
        self.output_dir().join("dev.token")
    }
}

/// A built, patched image.
#[derive(Clone, Debug)]
pub struct Image {
    pub path: PathBuf,
    pub bytes: u64,
    /// What the loader copies and what the image occupies in guest memory
    /// (its PT_LOAD segments' file and memory sizes), if the ELF reads.
    pub load: Option<LoadSize>,
    /// `auth=<token>` is appended to the command line when set.
    pub token: Option<String>,
}

impl Image {
    pub fn size_kib(&self) -> u64 {
        self.bytes.div_ceil(1024)
    }
}

/// The sums over an ELF's PT_LOAD segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadSize {
    /// Bytes copied from the file (text, read-only data, data).
    pub file_bytes: u64,
    /// Bytes occupied in memory (the same plus the zeroed .bss).
    pub memory_bytes: u64,
}

const PT_LOAD: u32 = 1;

/// The PT_LOAD sizes of a little-endian ELF64, or `None` if its program
/// headers do not fit in it.
pub fn load_size(elf: &[u8]) -> Option<LoadSize> {
    let u16_at = |at: usize| Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(elf.get(at..at + 8)?.try_into().ok()?));
    let table = usize::try_from(u64_at(32)?).ok()?;
    let entry_size = usize::from(u16_at(54)?);
    let entries = usize::from(u16_at(56)?);
    if entry_size < 56 {
        return None;
    }
    let mut size = LoadSize { file_bytes: 0, memory_bytes: 0 };
    for index in 0..entries {
        let header = table.checked_add(index.checked_mul(entry_size)?)?;
        if u32_at(header)? == PT_LOAD {
            size.file_bytes += u64_at(header + 32)?;
            size.memory_bytes += u64_at(header + 40)?;
        }
    }
    Some(size)
}

/// Builds `profile` (cargo's output streams to the terminal) and prepares its image.
pub fn build(layout: &Layout, profile: &Profile) -> Result<Image> {
    let token = token_for(layout, profile)?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let spec = &profile.spec;
    let status = Command::new(&cargo)
        .current_dir(&layout.root)
        .args(["build", "--release", "--target", KERNEL_TARGET, "-p", &spec.package, "--bin", &spec.bin])
        .status()
        .with_context(|| format!("cannot run {}", Path::new(&cargo).display()))?;
    if !status.success() {
        use std::os::unix::process::ExitStatusExt;
        // Ctrl-C reaches cargo too: there is no cargo error to point at.
        if crate::vm::interrupted() || status.signal().is_some() {
            bail!("the build of profile `{}` was interrupted", profile.name);
        }
        bail!(
            "cargo build failed for profile `{}` (package `{}`, bin `{}`): {status}; cargo's error is above",
            profile.name,
            spec.package,
            spec.bin
        );
    }
    let built = layout.cargo_output(profile);
    let path = layout.image_path(profile);
    prepare(&built, &path)?;
    let elf = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Image { path, bytes: elf.len() as u64, load: load_size(&elf), token })
}

/// The image of an earlier build, if there is one.
pub fn existing(layout: &Layout, profile: &Profile) -> Option<Image> {
    let path = layout.image_path(profile);
    let bytes = std::fs::metadata(&path).ok()?.len();
    Some(Image { path, bytes, load: None, token: None })
}

/// Copies `built` to `image` with the OS/ABI byte patched; written to a
/// temporary file and renamed, so a VM never sees half an image.
fn prepare(built: &Path, image: &Path) -> Result<()> {
    let mut elf = std::fs::read(built).with_context(|| format!("cannot read cargo's output {}", built.display()))?;
    patch_osabi(&mut elf).with_context(|| format!("{} is not a usable kernel image", built.display()))?;
    let dir = image.parent().context("image path has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let partial = image.with_extension("elf.partial");
    std::fs::write(&partial, &elf).with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot chmod {}", partial.display()))?;
    std::fs::rename(&partial, image).with_context(|| format!("cannot rename to {}", image.display()))?;
    Ok(())
}

/// Checks that `elf` is a little-endian ELF64 for x86_64 and sets OS/ABI to 0xff.
pub fn patch_osabi(elf: &mut [u8]) -> Result<()> {
    ensure!(elf.len() >= 64, "not an ELF file: {} bytes, shorter than an ELF64 header", elf.len());
    ensure!(elf.starts_with(b"\x7fELF"), "not an ELF file: it starts with {:02x?}", &elf[..4]);
    ensure!(elf[4] == ELFCLASS64, "not an ELF64 file (EI_CLASS = {}, want {ELFCLASS64})", elf[4]);
    ensure!(elf[5] == ELFDATA2LSB, "not a little-endian ELF (EI_DATA = {})", elf[5]);
    let machine = u16::from_le_bytes([elf[18], elf[19]]);
    ensure!(machine == EM_X86_64, "not an x86_64 ELF (e_machine = {machine}, want {EM_X86_64})");
    elf[EI_OSABI] = OSABI_STANDALONE;
    Ok(())
}

/// The token to append as `auth=`: `RTEDGE_TOKEN` for release profiles
/// (required), the development token for profiles with `[net]`.
fn token_for(layout: &Layout, profile: &Profile) -> Result<Option<String>> {
    if profile.spec.release {
        let Some(token) = std::env::var("RTEDGE_TOKEN").ok().filter(|token| !token.is_empty()) else {
            bail!(
                "profile `{}` is a release profile: set RTEDGE_TOKEN to its control-plane token \
                 (the development token is never put into a release image)",
                profile.name
            );
        };
        ensure!(
            token.chars().all(|c| c.is_ascii_graphic()),
            "RTEDGE_TOKEN must be printable ASCII without spaces (it becomes one `auth=` word)"
        );
        return Ok(Some(token));
    }
    let token = dev_token(&layout.token_path())?;
    Ok(profile.spec.net.is_some().then_some(token))
}

/// Reads the development token, creating it (mode 0600) on first use.
pub fn dev_token(path: &Path) -> Result<String> {
    if path.exists() {
        let token = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let token = token.trim().to_string();
        ensure!(is_token(&token), "{} does not hold {TOKEN_HEX_CHARS} hex characters; delete it to get a new token", path.display());
        let mode = std::fs::metadata(path).with_context(|| format!("cannot stat {}", path.display()))?.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("cannot chmod 0600 {}", path.display()))?;
        }
        return Ok(token);
    }
    let mut random = [0u8; TOKEN_HEX_CHARS / 2];
    std::fs::File::open("/dev/urandom").and_then(|mut urandom| urandom.read_exact(&mut random)).context("cannot read /dev/urandom")?;
    let token: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // Written whole to a private file, then linked into place: two first
    // builds at once (the images crate's tests, in a clean clone) both saw
    // no token; with `create_new` on the final path the loser failed with
    // "File exists" (or could read it still empty). The link either
    // publishes a whole token or finds the other one's.
    static ATTEMPT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let attempt = ATTEMPT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let partial = path.with_extension(format!("partial.{}.{attempt}", std::process::id()));
    let _ = std::fs::remove_file(&partial);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    writeln!(file, "{token}").with_context(|| format!("cannot write {}", partial.display()))?;
    drop(file);
    let linked = std::fs::hard_link(&partial, path);
    let _ = std::fs::remove_file(&partial);
    match linked {
        Ok(()) => Ok(token),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => dev_token(path),
        Err(error) => Err(error).with_context(|| format!("cannot create {}", path.display())),
    }
}

fn is_token(text: &str) -> bool {
    text.len() == TOKEN_HEX_CHARS && text.bytes().all(|byte| byte.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf_header() -> Vec<u8> {
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = ELFCLASS64;
        elf[5] = ELFDATA2LSB;
        elf[6] = 1;
        elf[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        elf
    }

    #[test]
    fn load_size_sums_only_pt_load_segments() {
        let mut elf = elf_header();
        elf[32..40].copy_from_slice(&64u64.to_le_bytes());
        elf[54..56].copy_from_slice(&56u16.to_le_bytes());
        elf[56..58].copy_from_slice(&3u16.to_le_bytes());
        for (kind, file, memory) in [(PT_LOAD, 0x1000u64, 0x1000u64), (4, 0x20, 0x20), (PT_LOAD, 0x300, 0x5000)] {
            let mut header = vec![0u8; 56];
            header[..4].copy_from_slice(&kind.to_le_bytes());
            header[32..40].copy_from_slice(&file.to_le_bytes());
            header[40..48].copy_from_slice(&memory.to_le_bytes());
            elf.extend(header);
        }
        assert_eq!(load_size(&elf), Some(LoadSize { file_bytes: 0x1300, memory_bytes: 0x6000 }));
        // A table that runs past the end of the file is refused.
        elf[56..58].copy_from_slice(&4u16.to_le_bytes());
        assert_eq!(load_size(&elf), None);
    }

    #[test]
    fn patch_sets_only_the_osabi_byte() {
        let mut elf = elf_header();
        let before = elf.clone();
        patch_osabi(&mut elf).expect("valid header");
        let changed: Vec<usize> = (0..elf.len()).filter(|&index| elf[index] != before[index]).collect();
        assert_eq!(changed, [EI_OSABI]);
        assert_eq!(elf[EI_OSABI], 0xff);
    }

    #[test]
    fn patch_refuses_what_is_not_an_x86_64_elf64() {
        let error = |elf: &mut Vec<u8>| patch_osabi(elf).expect_err("must be refused").to_string();
        let mut script = b"#!/bin/sh\n".to_vec();
        script.resize(64, b' ');
        assert_eq!(error(&mut script), "not an ELF file: it starts with [23, 21, 2f, 62]");
        assert_eq!(error(&mut b"\x7fELF".to_vec()), "not an ELF file: 4 bytes, shorter than an ELF64 header");
        let mut elf32 = elf_header();
        elf32[4] = 1;
        assert_eq!(error(&mut elf32), "not an ELF64 file (EI_CLASS = 1, want 2)");
        let mut arm = elf_header();
        arm[18] = 183;
        assert_eq!(error(&mut arm), "not an x86_64 ELF (e_machine = 183, want 62)");
    }

    #[test]
    fn concurrent_first_builds_agree_on_one_token() {
        let dir = std::env::temp_dir().join(format!("rtedge-images-token-race-{}", std::process::id()));
        for round in 0..20 {
            let path = dir.join(format!("{round}/dev.token"));
            let tokens: Vec<String> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..4).map(|_| scope.spawn(|| dev_token(&path))).collect();
                handles.into_iter().map(|handle| handle.join().expect("thread").expect("a token for every caller")).collect()
            });
            assert!(tokens.iter().all(|token| token == &tokens[0]), "round {round}: {tokens:?}");
            assert_eq!(std::fs::read_to_string(&path).expect("token file").trim(), tokens[0]);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn dev_token_is_created_once_private_and_reused() {
        let dir = std::env::temp_dir().join(format!("rtedge-images-token-{}", std::process::id()));
        let path = dir.join("dev.token");
        let _ = std::fs::remove_dir_all(&dir);
        let first = dev_token(&path).expect("token created");
        assert!(is_token(&first), "{first}");
        let mode = std::fs::metadata(&path).expect("token file").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(dev_token(&path).expect("token reused"), first);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
