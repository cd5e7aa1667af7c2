//! Application modules, as the seeds' programs were (`init_module` /
//! `cleanup_module`): each has an `init` that takes its resources and an
//! `exit` that releases all of them — threads (bounded wait), tasklets
//! (kill), timers (delete_sync), workqueues (flush and destroy), rt-pool
//! buffers, soft IRQs, IRQ handlers, commands. `MODULE LIST|LOAD|UNLOAD`
//! drive them over the control plane.

use alloc::string::String;
use alloc::vec::Vec;

use crate::hook::Hook;
use crate::thread::Mutex;

/// A loadable part of the application.
pub trait Module: Sync {
    fn name(&self) -> &'static str;
    /// One line for `MODULE LIST`.
    fn description(&self) -> &'static str {
        ""
    }
    /// Takes the module's resources and starts it.
    fn init(&'static self) -> Result<(), String>;
    /// Releases everything `init` (and the running module) took.
    fn exit(&'static self);
    /// Threads the module runs now (for `MODULE LIST`).
    fn threads(&self) -> usize {
        0
    }
}

struct Entry {
    module: &'static dyn Module,
    loaded: bool,
    loads: u64,
}

/// Serialises loads and unloads (they may block), and guards the list.
static MODULES: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

/// Watches a module's `init`: called with the module's name and a function
/// that runs `init` and says whether it succeeded (the plane's listings
/// look at what was registered before and after, to name the module as the
/// owner). `init` runs once whatever the observer does: a second call only
/// repeats the first answer, and `load` runs it if the observer did not.
pub type LoadObserver = fn(&'static str, &mut dyn FnMut() -> bool);

static LOAD_OBSERVER: Hook<LoadObserver> = Hook::new();

/// Sets the observer of module loads (see [`LoadObserver`]).
pub fn set_load_observer(observer: LoadObserver) {
    LOAD_OBSERVER.set(observer);
}

/// Why a load or unload failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModuleError {
    NoSuchModule,
    AlreadyLoaded,
    NotLoaded,
    InitFailed(String),
}

impl core::fmt::Display for ModuleError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ModuleError::NoSuchModule => f.write_str("no such module"),
            ModuleError::AlreadyLoaded => f.write_str("module is already loaded"),
            ModuleError::NotLoaded => f.write_str("module is not loaded"),
            ModuleError::InitFailed(reason) => write!(f, "init failed: {reason}"),
        }
    }
}

/// Makes `module` known (not loaded).
pub fn register(module: &'static dyn Module) {
    let mut modules = MODULES.lock();
    if !modules.iter().any(|entry| entry.module.name() == module.name()) {
        modules.push(Entry { module, loaded: false, loads: 0 });
    }
}

/// Loads (inits) `name`.
pub fn load(name: &str) -> Result<(), ModuleError> {
    let mut modules = MODULES.lock();
    let entry = modules.iter_mut().find(|entry| entry.module.name() == name).ok_or(ModuleError::NoSuchModule)?;
    if entry.loaded {
        return Err(ModuleError::AlreadyLoaded);
    }
    // What init registers is the module's (the listings' `owner`): the
    // observer, if a plane set one, runs `init` between its two looks.
    let module = entry.module;
    let mut result = None;
    let mut init = || result.get_or_insert_with(|| module.init()).is_ok();
    if let Some(observe) = LOAD_OBSERVER.get() {
        observe(module.name(), &mut init);
    }
    init();
    result.unwrap_or(Ok(())).map_err(ModuleError::InitFailed)?;
    entry.loaded = true;
    entry.loads += 1;
    log::debug!("module {name} loaded");
    Ok(())
}

/// Unloads (exits) `name`.
pub fn unload(name: &str) -> Result<(), ModuleError> {
    let mut modules = MODULES.lock();
    let entry = modules.iter_mut().find(|entry| entry.module.name() == name).ok_or(ModuleError::NoSuchModule)?;
    if !entry.loaded {
        return Err(ModuleError::NotLoaded);
    }
    entry.module.exit();
    entry.loaded = false;
    log::debug!("module {name} unloaded");
    Ok(())
}

/// Unloads every loaded module, newest registration last (shutdown).
pub fn unload_all() {
    let mut modules = MODULES.lock();
    for entry in modules.iter_mut().rev().filter(|entry| entry.loaded) {
        entry.module.exit();
        entry.loaded = false;
    }
}

/// One module's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleInfo {
    pub name: &'static str,
    pub description: &'static str,
    pub loaded: bool,
    pub loads: u64,
    pub threads: usize,
}

/// Every registered module.
pub fn list() -> Vec<ModuleInfo> {
    MODULES
        .lock()
        .iter()
        .map(|entry| ModuleInfo {
            name: entry.module.name(),
            description: entry.module.description(),
            loaded: entry.loaded,
            loads: entry.loads,
            threads: if entry.loaded { entry.module.threads() } else { 0 },
        })
        .collect()
}
