//! Shared statics: plain `static`s that real-time threads, kernel code and
//! the control plane (`GET`/`SET`/`MGET`/`KEYS`) all use — the replacement
//! for shared memory segments. Each has a name, a type (integer, float,
//! bool, short text) and declared writability.
//!
//! Real-time threads read and write them without locks that could block:
//! numbers and flags are single atomics; text uses a sequence lock over
//! atomic words, so a reader never sees a torn value (it retries while a
//! write is under way), and writers are serialised by a short
//! interrupt-safe spinlock.

use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use rtedge_engine::seqlock::SeqBytes;

use rtedge_engine::value::{SHORT_TEXT_CAPACITY, Scalar, ScalarType, ShortText, ValueError, glob_match};

use crate::sync::IrqSpinLock;

/// Who may write a shared static from outside (the control plane).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    ReadOnly,
    ReadWrite,
}

/// A value the control plane can read and (if writable) write by name.
pub trait SharedValue: Sync {
    fn name(&self) -> &'static str;
    fn scalar_type(&self) -> ScalarType;
    fn access(&self) -> Access;
    fn get(&self) -> Scalar;
    /// Stores `value` (already of the right type).
    fn store(&self, value: Scalar);
}

/// A shared integer.
#[derive(Debug)]
pub struct SharedInt {
    name: &'static str,
    access: Access,
    value: AtomicI64,
}

impl SharedInt {
    pub const fn new(name: &'static str, access: Access, initial: i64) -> Self {
        Self { name, access, value: AtomicI64::new(initial) }
    }

    pub fn load(&self) -> i64 {
        self.value.load(Ordering::Acquire)
    }

    pub fn set(&self, value: i64) {
        self.value.store(value, Ordering::Release);
    }

    pub fn add(&self, delta: i64) -> i64 {
        self.value.fetch_add(delta, Ordering::AcqRel) + delta
    }
}

impl SharedValue for SharedInt {
    fn name(&self) -> &'static str {
        self.name
    }
    fn scalar_type(&self) -> ScalarType {
        ScalarType::Integer
    }
    fn access(&self) -> Access {
        self.access
    }
    fn get(&self) -> Scalar {
        Scalar::Integer(self.load())
    }
    fn store(&self, value: Scalar) {
        if let Scalar::Integer(value) = value {
            self.set(value);
        }
    }
}

/// A shared float (an `f64` kept as its bits in one atomic).
#[derive(Debug)]
pub struct SharedFloat {
    name: &'static str,
    access: Access,
    bits: AtomicU64,
}

impl SharedFloat {
    /// `initial_bits` is `f64::to_bits` of the initial value (const context).
    pub const fn new(name: &'static str, access: Access, initial: f64) -> Self {
        Self { name, access, bits: AtomicU64::new(initial.to_bits()) }
    }

    pub fn load(&self) -> f64 {
        f64::from_bits(self.bits.load(Ordering::Acquire))
    }

    pub fn set(&self, value: f64) {
        self.bits.store(value.to_bits(), Ordering::Release);
    }
}

impl SharedValue for SharedFloat {
    fn name(&self) -> &'static str {
        self.name
    }
    fn scalar_type(&self) -> ScalarType {
        ScalarType::Float
    }
    fn access(&self) -> Access {
        self.access
    }
    fn get(&self) -> Scalar {
        Scalar::Float(self.load())
    }
    fn store(&self, value: Scalar) {
        if let Scalar::Float(value) = value {
            self.set(value);
        }
    }
}

/// A shared flag.
#[derive(Debug)]
pub struct SharedBool {
    name: &'static str,
    access: Access,
    value: AtomicBool,
}

impl SharedBool {
    pub const fn new(name: &'static str, access: Access, initial: bool) -> Self {
        Self { name, access, value: AtomicBool::new(initial) }
    }

    pub fn load(&self) -> bool {
        self.value.load(Ordering::Acquire)
    }

    pub fn set(&self, value: bool) {
        self.value.store(value, Ordering::Release);
    }

    /// Reads and clears the flag.
    pub fn take(&self) -> bool {
        self.value.swap(false, Ordering::AcqRel)
    }
}

impl SharedValue for SharedBool {
    fn name(&self) -> &'static str {
        self.name
    }
    fn scalar_type(&self) -> ScalarType {
        ScalarType::Bool
    }
    fn access(&self) -> Access {
        self.access
    }
    fn get(&self) -> Scalar {
        Scalar::Bool(self.load())
    }
    fn store(&self, value: Scalar) {
        if let Scalar::Bool(value) = value {
            self.set(value);
        }
    }
}

/// Words of the text's sequence lock (64 bytes).
const TEXT_WORDS: usize = SHORT_TEXT_CAPACITY / 8;
const _: () = assert!(SHORT_TEXT_CAPACITY.is_multiple_of(8), "the text fills whole words");

/// A shared short text (at most 64 bytes) under a sequence lock over
/// atomic words (`rtedge_engine::seqlock`, model-checked): a reader never
/// sees a torn value and never races a plain write; writers are
/// serialised, with interrupts off, by a short spinlock, so a reader on the
/// writer's CPU never spins on a write it interrupted.
pub struct SharedText {
    name: &'static str,
    access: Access,
    text: SeqBytes<TEXT_WORDS>,
    writer: IrqSpinLock<()>,
}

impl core::fmt::Debug for SharedText {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SharedText").field("name", &self.name).field("value", &self.load().as_str()).finish()
    }
}

impl SharedText {
    pub const fn new(name: &'static str, access: Access) -> Self {
        Self { name, access, text: SeqBytes::new(), writer: IrqSpinLock::new(()) }
    }

    /// Reads a consistent copy (retrying while a write is under way).
    pub fn load(&self) -> ShortText {
        let mut copy = [0u8; SHORT_TEXT_CAPACITY];
        let len = self.text.read(&mut copy);
        ShortText::from_utf8(&copy[..len]).unwrap_or_default()
    }

    /// Stores `text` (cut at 64 bytes, on a character boundary).
    pub fn set(&self, text: &str) {
        let mut len = text.len().min(SHORT_TEXT_CAPACITY);
        while !text.is_char_boundary(len) {
            len -= 1;
        }
        let _writer = self.writer.lock();
        self.text.write(&text.as_bytes()[..len]);
    }
}

impl SharedValue for SharedText {
    fn name(&self) -> &'static str {
        self.name
    }
    fn scalar_type(&self) -> ScalarType {
        ScalarType::Text
    }
    fn access(&self) -> Access {
        self.access
    }
    fn get(&self) -> Scalar {
        Scalar::Text(self.load())
    }
    fn store(&self, value: Scalar) {
        if let Scalar::Text(text) = value {
            self.set(text.as_str());
        }
    }
}

static REGISTRY: IrqSpinLock<Vec<&'static dyn SharedValue>> = IrqSpinLock::new(Vec::new());

/// Makes `value` reachable by name. A second value with the same name
/// replaces the first. Thread context (may allocate).
pub fn register(value: &'static dyn SharedValue) {
    let mut registry = REGISTRY.lock();
    registry.retain(|existing| existing.name() != value.name());
    registry.push(value);
}

/// Removes `name` (module unload).
pub fn unregister(name: &str) {
    REGISTRY.lock().retain(|existing| existing.name() != name);
}

fn find(name: &str) -> Option<&'static dyn SharedValue> {
    REGISTRY.lock().iter().copied().find(|value| value.name() == name)
}

/// The value of `name`.
pub fn get(name: &str) -> Option<Scalar> {
    find(name).map(|value| value.get())
}

/// Why a `SET` failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetError {
    NoSuchKey,
    ReadOnly,
    Type(ValueError),
}

/// Parses `text` as `name`'s type and stores it.
pub fn set(name: &str, text: &[u8]) -> Result<(), SetError> {
    let value = find(name).ok_or(SetError::NoSuchKey)?;
    if value.access() == Access::ReadOnly {
        return Err(SetError::ReadOnly);
    }
    let scalar = Scalar::parse(value.scalar_type(), text).map_err(SetError::Type)?;
    value.store(scalar);
    Ok(())
}

/// Names matching a glob pattern, sorted.
pub fn keys(pattern: &[u8]) -> Vec<String> {
    let mut names: Vec<String> = REGISTRY
        .lock()
        .iter()
        .filter(|value| glob_match(pattern, value.name().as_bytes(), false))
        .map(|value| String::from(value.name()))
        .collect();
    names.sort();
    names
}

/// Number of registered shared statics.
pub fn count() -> usize {
    REGISTRY.lock().len()
}
