//! Image profiles: `images/profiles/<name>.toml`, one per bootable image.
//! Parsing rejects unknown keys; `validate` rejects values a hypervisor
//! would refuse or misread, with the reason.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;

use crate::exitcode::MAX_PORTABLE_CODE;
use crate::hypervisor::{Hypervisor, PortForward};

fn default_timeout_s() -> u64 {
    120
}

fn default_smp() -> u32 {
    1
}

fn default_memory_mib() -> u32 {
    256
}

/// One profile file, as written.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileFile {
    /// One line for `info` and the reports.
    pub description: String,
    /// Cargo package that holds the kernel binary.
    pub package: String,
    /// Cargo binary target in that package.
    pub bin: String,
    /// Kernel command line (`key=value` words).
    #[serde(default)]
    pub cmdline: String,
    /// The guest code a test run must end with; absent for images that run until stopped.
    pub expect_exit: Option<u8>,
    /// Also require `ktest: result: N passed, 0 failed` with N = the `running N` count.
    #[serde(default)]
    pub expect_ktest_pass: bool,
    /// Hard limit for unattended runs (test, bench, boot-time).
    #[serde(default = "default_timeout_s")]
    pub timeout_s: u64,
    /// Hypervisors this image is tested under, in order.
    pub hypervisors: Vec<Hypervisor>,
    #[serde(default = "default_smp")]
    pub smp: u32,
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u32,
    /// Control-plane networking; off when absent.
    pub net: Option<Net>,
    /// A release image: refuses to build without `RTEDGE_TOKEN`.
    #[serde(default)]
    pub release: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Net {
    pub guest_port: u16,
    pub host_port: u16,
}

impl Net {
    pub fn forward(self) -> PortForward {
        PortForward { host: self.host_port, guest: self.guest_port }
    }
}

/// A validated profile with its name (the file stem).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    pub path: PathBuf,
    pub spec: ProfileFile,
}

/// Largest guest memory: uhyve reserves the 3 GiB..4 GiB gap.
const MAX_MEMORY_MIB: u32 = 3072;
const MIN_MEMORY_MIB: u32 = 32;
const MAX_SMP: u32 = 255;

fn is_name(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-' || byte == b'_')
}

impl ProfileFile {
    /// Parses and validates one profile's text.
    pub fn parse(text: &str) -> Result<Self> {
        let file: ProfileFile = toml::from_str(text)?;
        file.validate()?;
        Ok(file)
    }

    fn validate(&self) -> Result<()> {
        ensure!(!self.package.trim().is_empty(), "`package` is empty");
        ensure!(!self.bin.is_empty() && !self.bin.contains(char::is_whitespace), "`bin` must be one cargo binary name, got {:?}", self.bin);
        ensure!(
            !self.cmdline.contains(|c: char| c.is_control()),
            "`cmdline` must be one line of `key=value` words without control characters"
        );
        ensure!(
            !self.cmdline.split_whitespace().any(|word| word.starts_with("auth=")),
            "`cmdline` must not set `auth=`: the runner appends the token for profiles with [net]"
        );
        if let Some(code) = self.expect_exit {
            ensure!(code <= MAX_PORTABLE_CODE, "`expect_exit = {code}` is above {MAX_PORTABLE_CODE}, which QEMU cannot report intact");
        }
        ensure!(!self.expect_ktest_pass || self.expect_exit == Some(0), "`expect_ktest_pass = true` needs `expect_exit = 0`");
        ensure!(self.timeout_s >= 1, "`timeout_s` must be at least 1");
        ensure!(!self.hypervisors.is_empty(), "`hypervisors` is empty; list at least one of qemu-microvm, qemu-q35, uhyve");
        for (index, hypervisor) in self.hypervisors.iter().enumerate() {
            ensure!(!self.hypervisors[..index].contains(hypervisor), "`hypervisors` lists {hypervisor} twice");
        }
        ensure!((1..=MAX_SMP).contains(&self.smp), "`smp = {}` must be between 1 and {MAX_SMP}", self.smp);
        ensure!(
            (MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&self.memory_mib) && self.memory_mib.is_multiple_of(2),
            "`memory_mib = {}` must be an even number (uhyve maps 2 MiB pages) between {MIN_MEMORY_MIB} and {MAX_MEMORY_MIB}",
            self.memory_mib
        );
        if let Some(net) = self.net {
            ensure!(net.guest_port != 0 && net.host_port != 0, "[net] ports must not be 0");
        }
        Ok(())
    }
}

impl Profile {
    /// Reads and validates `path`; the profile's name is the file stem.
    pub fn load(path: &Path) -> Result<Self> {
        let name = path
            .file_stem()
            .and_then(|stem| stem.to_str())
            .filter(|stem| is_name(stem))
            .with_context(|| format!("{}: profile file names are lowercase letters, digits, `-` and `_`", path.display()))?
            .to_string();
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let spec = ProfileFile::parse(&text).with_context(|| format!("invalid profile {}", path.display()))?;
        Ok(Profile { name, path: path.to_path_buf(), spec })
    }

    /// Whether `test` may run it: it has an expected exit code.
    pub fn is_test(&self) -> bool {
        self.spec.expect_exit.is_some()
    }
}

/// All profiles in a directory, by name.
#[derive(Clone, Debug)]
pub struct Profiles {
    pub dir: PathBuf,
    pub by_name: BTreeMap<String, Profile>,
}

impl Profiles {
    pub fn load_dir(dir: &Path) -> Result<Self> {
        let entries = std::fs::read_dir(dir).with_context(|| format!("cannot read profile directory {}", dir.display()))?;
        let mut by_name = BTreeMap::new();
        for entry in entries {
            let path = entry.with_context(|| format!("cannot list {}", dir.display()))?.path();
            if path.extension().is_some_and(|extension| extension == "toml") {
                let profile = Profile::load(&path)?;
                by_name.insert(profile.name.clone(), profile);
            }
        }
        Ok(Profiles { dir: dir.to_path_buf(), by_name })
    }

    pub fn get(&self, name: &str) -> Result<&Profile> {
        match self.by_name.get(name) {
            Some(profile) => Ok(profile),
            None => bail!(
                "no profile `{name}` in {}; available: {}",
                self.dir.display(),
                self.by_name.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KTEST: &str = r#"
        description = "kernel test harness"
        package = "rtedge-ktest"
        bin = "rtedge-ktest"
        cmdline = "log=info"
        expect_exit = 0
        expect_ktest_pass = true
        timeout_s = 120
        hypervisors = ["qemu-microvm", "qemu-q35", "uhyve"]
        smp = 1
        memory_mib = 256
    "#;

    fn error_of(text: &str) -> String {
        format!("{:#}", ProfileFile::parse(text).expect_err("must be rejected"))
    }

    #[test]
    fn parses_a_full_profile() {
        let profile = ProfileFile::parse(KTEST).expect("valid profile");
        assert_eq!(
            profile,
            ProfileFile {
                description: "kernel test harness".to_string(),
                package: "rtedge-ktest".to_string(),
                bin: "rtedge-ktest".to_string(),
                cmdline: "log=info".to_string(),
                expect_exit: Some(0),
                expect_ktest_pass: true,
                timeout_s: 120,
                hypervisors: vec![Hypervisor::QemuMicrovm, Hypervisor::QemuQ35, Hypervisor::Uhyve],
                smp: 1,
                memory_mib: 256,
                net: None,
                release: false,
            }
        );
    }

    #[test]
    fn defaults_fill_optional_keys() {
        let profile = ProfileFile::parse(
            "description = \"d\"\npackage = \"p\"\nbin = \"b\"\nhypervisors = [\"uhyve\"]\n[net]\nguest_port = 1\nhost_port = 2\n",
        )
        .expect("valid profile");
        assert_eq!(
            (profile.cmdline.as_str(), profile.expect_exit, profile.timeout_s, profile.smp, profile.memory_mib),
            ("", None, 120, 1, 256)
        );
        assert_eq!(profile.net.map(Net::forward), Some(PortForward { host: 2, guest: 1 }));
    }

    #[test]
    fn rejects_unknown_keys() {
        let error = error_of(&format!("{KTEST}\nsmpp = 2\n"));
        assert!(error.contains("unknown field `smpp`"), "{error}");
        let error = error_of(&format!("{KTEST}\n[net]\nguest_port = 1\nhost_port = 2\nhost = 3\n"));
        assert!(error.contains("unknown field `host`"), "{error}");
    }

    #[test]
    fn rejects_unknown_hypervisors() {
        let error = error_of(&KTEST.replace("\"qemu-q35\"", "\"firecracker\""));
        assert!(error.contains("unknown variant `firecracker`"), "{error}");
    }

    #[test]
    fn rejects_memory_uhyve_cannot_map() {
        let error = error_of(&KTEST.replace("memory_mib = 256", "memory_mib = 255"));
        assert!(error.starts_with("`memory_mib = 255` must be an even number"), "{error}");
        let error = error_of(&KTEST.replace("memory_mib = 256", "memory_mib = 4096"));
        assert!(error.starts_with("`memory_mib = 4096` must be an even number"), "{error}");
    }

    #[test]
    fn rejects_bad_values_with_their_reason() {
        let cases = [
            (KTEST.replace("expect_exit = 0", "expect_exit = 200"), "`expect_exit = 200` is above 127, which QEMU cannot report intact"),
            (KTEST.replace("expect_exit = 0", "expect_exit = 1"), "`expect_ktest_pass = true` needs `expect_exit = 0`"),
            (KTEST.replace("smp = 1", "smp = 0"), "`smp = 0` must be between 1 and 255"),
            (KTEST.replace("timeout_s = 120", "timeout_s = 0"), "`timeout_s` must be at least 1"),
            (KTEST.replace("\"qemu-q35\", ", "\"uhyve\", "), "`hypervisors` lists uhyve twice"),
            (
                KTEST.replace("log=info", "log=info auth=x"),
                "`cmdline` must not set `auth=`: the runner appends the token for profiles with [net]",
            ),
            (KTEST.replace("bin = \"rtedge-ktest\"", "bin = \"a b\""), "`bin` must be one cargo binary name, got \"a b\""),
        ];
        for (text, expected) in cases {
            assert_eq!(error_of(&text), expected);
        }
    }

    #[test]
    fn shipped_profiles_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
        let profiles = Profiles::load_dir(&dir).expect("shipped profiles parse");
        let names: Vec<&str> = profiles.by_name.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "appliance",
                "bench",
                "fault-page",
                "fault-panic",
                "fault-softirq-block",
                "fault-stack",
                "ktest",
                "ktest-smp2",
                "ktest-smp4",
                "selftest-modules"
            ]
        );
        let expected: Vec<(&str, Option<u8>)> =
            profiles.by_name.values().map(|profile| (profile.name.as_str(), profile.spec.expect_exit)).collect();
        assert_eq!(
            expected,
            [
                ("appliance", None),
                ("bench", Some(0)),
                ("fault-page", Some(46)),
                ("fault-panic", Some(2)),
                ("fault-softirq-block", Some(2)),
                ("fault-stack", Some(3)),
                ("ktest", Some(0)),
                ("ktest-smp2", Some(0)),
                ("ktest-smp4", Some(0)),
                ("selftest-modules", Some(0)),
            ]
        );
        let appliance = profiles.get("appliance").expect("appliance exists");
        assert_eq!(appliance.spec.net, Some(Net { guest_port: 6379, host_port: 6380 }));
    }

    #[test]
    fn unknown_profile_lists_the_available_ones() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
        let profiles = Profiles::load_dir(&dir).expect("shipped profiles parse");
        let error = profiles.get("nope").expect_err("no such profile").to_string();
        assert!(
            error.ends_with(
                "available: appliance, bench, fault-page, fault-panic, fault-softirq-block, fault-stack, ktest, ktest-smp2, ktest-smp4, selftest-modules"
            ),
            "{error}"
        );
    }
}
