//! Program 8: `kmore`, a kernel thread that reads a file.
//!
//! At load, if the command line (or the configuration file) names one with
//! `file=/path`, a kernel thread `kmore` opens it through the kernel's
//! read-only file API (boot archives passed as `-initrd`, or uhyve's mapped
//! host files), reads its first page (4096 bytes) and logs it, as the seed
//! did; then it exits. A missing file or a directory gives a clear error
//! (the seed's open TODO) on the console and on channel `events`.
//!
//! Commands: `KMORE path` does the same on request (the open is checked
//! first, so the reply carries the error: `-ERR no such file: /x`,
//! `-ERR is a directory: /etc`; else the reader thread's id), and `FILES
//! [dir]` lists a directory of the boot archives.
//!
//! Observe: the console (`kmore: | ...` lines), events `kmore-read` /
//! `kmore-error`, shared statics `kmore.reads`, `kmore.errors`,
//! `kmore.last_bytes`.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use rtedge_control::CommandContext;
use rtedge_kernel::files::{self, File, FileError};
use rtedge_kernel::modules::Module;
use rtedge_kernel::shared::{Access, SharedInt, SharedValue};
use rtedge_kernel::thread;
use rtedge_plane::commands;
use rtedge_proto::{CommandFlags, CommandSpec, Reply, Request};

use super::ThreadSet;

/// How much the seed read: one page.
pub const PAGE_SIZE: usize = 4096;
const THREAD_NAME: &str = "kmore";
const MAX_READERS: usize = 4;

static READS: SharedInt = SharedInt::new("kmore.reads", Access::ReadOnly, 0);
static ERRORS: SharedInt = SharedInt::new("kmore.errors", Access::ReadOnly, 0);
static LAST_BYTES: SharedInt = SharedInt::new("kmore.last_bytes", Access::ReadOnly, 0);
static STATICS: [&dyn SharedValue; 3] = [&READS, &ERRORS, &LAST_BYTES];

static READERS: ThreadSet<MAX_READERS> = ThreadSet::new();

static COMMANDS: [(CommandSpec, commands::Handler); 2] = [
    (
        CommandSpec::new(
            "kmore",
            2,
            CommandFlags::READONLY,
            "appliance",
            "Starts a kernel thread that logs the first page of a boot or host file; replies with its thread id.",
            "KMORE path",
        ),
        handle_kmore,
    ),
    (
        CommandSpec::new(
            "files",
            -1,
            CommandFlags::READONLY,
            "appliance",
            "Lists a directory of the boot archives (default /).",
            "FILES [dir]",
        ),
        handle_files,
    ),
];

/// What a reader thread reads: a path it opens itself, or a file the
/// command already opened.
enum Target {
    Path(String),
    Open(File),
}

/// Console-safe text: control characters (but tabs) shown as `.`.
fn printable(line: &str) -> String {
    line.chars().map(|c| if c.is_control() && c != '\t' { '.' } else { c }).collect()
}

/// Reads the first page of `file`.
pub fn first_page(file: &mut File) -> Result<Vec<u8>, FileError> {
    let mut page = vec![0u8; PAGE_SIZE];
    let count = file.read_full(&mut page)?;
    page.truncate(count);
    Ok(page)
}

fn fail(error: &FileError) -> i32 {
    ERRORS.add(1);
    log::warn!("kmore: {error}");
    super::event("kmore-error", &[], "error", &error.to_string());
    1
}

fn reader(target: Target) -> i32 {
    let mut file = match target {
        Target::Open(file) => file,
        Target::Path(path) => {
            log::info!("kmore: reading {path}");
            match files::open(&path) {
                Ok(file) => file,
                Err(error) => return fail(&error),
            }
        }
    };
    let page = match first_page(&mut file) {
        Ok(page) => page,
        Err(error) => return fail(&error),
    };
    log::info!("kmore: read {} of {} bytes from {}:", page.len(), file.size(), file.path());
    let text = String::from_utf8_lossy(&page);
    for line in text.lines() {
        log::info!("kmore: | {}", printable(line));
    }
    READS.add(1);
    LAST_BYTES.set(page.len() as i64);
    super::event("kmore-read", &[("bytes", page.len() as i64), ("size", file.size() as i64)], "path", file.path());
    0
}

/// Starts a reader thread.
fn start_reader(target: Target) -> Result<thread::ThreadId, String> {
    if !READERS.has_room() {
        return Err(format!("{MAX_READERS} readers are running already"));
    }
    let id =
        thread::Builder::new(THREAD_NAME).spawn(move || reader(target)).map_err(|error| format!("cannot start {THREAD_NAME}: {error}"))?;
    if !READERS.add(id) {
        let _ = thread::join(id, Some(super::THREAD_EXIT_TIMEOUT_NS));
    }
    Ok(id)
}

/// What `KMORE path` does: check the open here (so the reply carries the
/// error), then hand the open file to a reader thread.
pub fn kmore(path: &str) -> Result<thread::ThreadId, String> {
    let file = files::open(path).map_err(|error| error.to_string())?;
    start_reader(Target::Open(file))
}

fn handle_kmore(_: &mut CommandContext<'_>, request: &Request) -> Reply {
    let Some(path) = request.arg(1).and_then(|bytes| core::str::from_utf8(bytes).ok()) else {
        return Reply::err("ERR", "the path must be UTF-8 text");
    };
    match kmore(path) {
        Ok(id) => Reply::Integer(i64::from(id.serial())),
        Err(message) => Reply::err("ERR", &message),
    }
}

fn handle_files(_: &mut CommandContext<'_>, request: &Request) -> Reply {
    if request.len() > 2 {
        return Reply::wrong_arity("files");
    }
    let directory = match request.arg(1).map(core::str::from_utf8) {
        None => "/",
        Some(Ok(text)) => text,
        Some(Err(_)) => return Reply::err("ERR", "the path must be UTF-8 text"),
    };
    match files::list(directory) {
        Ok(entries) => Reply::Array(
            entries
                .into_iter()
                .map(|entry| {
                    Reply::Map(vec![
                        (Reply::bulk_str("name"), Reply::bulk_str(&entry.name)),
                        (Reply::bulk_str("path"), Reply::bulk_str(&entry.path)),
                        (Reply::bulk_str("kind"), Reply::bulk_str(entry.kind.name())),
                        (Reply::bulk_str("size"), Reply::Integer(entry.size as i64)),
                    ])
                })
                .collect(),
        ),
        Err(error) => Reply::err("ERR", &error.to_string()),
    }
}

pub struct KmoreProgram;

pub static MODULE: KmoreProgram = KmoreProgram;

impl KmoreProgram {
    fn start() -> Result<(), String> {
        for (spec, handler) in &COMMANDS {
            commands::register(*spec, *handler).map_err(|error| format!("cannot register {}: {error}", spec.name))?;
        }
        match super::setting("file") {
            Some(path) => {
                start_reader(Target::Path(path))?;
            }
            None => log::debug!("kmore: no file= given; KMORE path reads one on request"),
        }
        Ok(())
    }
}

impl Module for KmoreProgram {
    fn name(&self) -> &'static str {
        "kmore"
    }

    fn description(&self) -> &'static str {
        "kernel thread logs the first page of file= (boot archive or uhyve host file); commands KMORE, FILES"
    }

    fn init(&'static self) -> Result<(), String> {
        READS.set(0);
        ERRORS.set(0);
        LAST_BYTES.set(0);
        super::register_statics(&STATICS);
        Self::start().inspect_err(|_| self.exit())
    }

    fn exit(&'static self) {
        for (spec, _) in &COMMANDS {
            commands::unregister(spec.name);
        }
        READERS.stop_all(THREAD_NAME);
        super::unregister_statics(&STATICS);
    }

    fn threads(&self) -> usize {
        READERS.running()
    }
}
