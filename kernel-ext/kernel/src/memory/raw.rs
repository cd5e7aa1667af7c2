//! The reserved raw memory region: the seeds' "boot with `mem=126m` and
//! map the last 2 MiB through /dev/mem", done safely.
//!
//! `reserve=<size>` on the command line (e.g. `reserve=2M`) makes
//! `memory::init` carve that much off the top of the highest free RAM range,
//! keep it out of the heap and identity map it read/write; nobody else ever
//! uses it. [`RawRegion::get`] hands it to the application, which places
//! typed views on it:
//!
//! - [`RawRegion::typed`] gives a shared `&'static T` at an offset, for `T`
//!   made only of atomics ([`RawPod`]), so real-time threads, interrupt
//!   handlers and the control plane use it concurrently without locks and
//!   without `unsafe`. A range keeps the type it was first viewed as for the
//!   rest of the run: asking again for the same type at the same offset
//!   returns the same view, anything else overlapping it is refused (so two
//!   types never alias the same bytes, and atomics of different sizes never
//!   race on them).
//! - [`RawRegion::exclusive`] claims a byte range for one owner
//!   ([`RawBytes`], with `&mut [u8]` access) until it is dropped; it too is
//!   refused if it overlaps any other claim.
//!
//! The contents at boot are whatever the RAM held: every `RawPod` type is
//! valid for every bit pattern, and users that care put a magic number in
//! their layout (see the `raw_pod!` example).
//!
//! Claiming never allocates (a fixed table), so it is safe from any context.

use core::any::TypeId;
use core::mem::{align_of, size_of};
use core::sync::atomic::{AtomicI8, AtomicI16, AtomicI32, AtomicI64, AtomicIsize, AtomicU8, AtomicU16, AtomicU32, AtomicU64, AtomicUsize};

use crate::sync::IrqSpinLock;

/// Plain old data made of atomics: may live in the raw region and be
/// shared by every context.
///
/// # Safety
/// An implementing type must
/// - be valid for every bit pattern of its size (the region's contents are
///   arbitrary): no `bool`, `char`, enums, references or pointers, no
///   `AtomicBool`;
/// - allow shared mutation only through atomics (no `Cell`, no plain
///   fields that are written), so `&T` is all anyone needs and `Sync` holds;
/// - need no `Drop` (the memory is never released);
/// - have a stable layout (`#[repr(C)]` or `#[repr(transparent)]` for
///   structs), so that the same type means the same bytes.
///
/// The integer atomics and arrays of `RawPod` are `RawPod`; use
/// [`raw_pod!`](crate::raw_pod) to declare a struct without writing `unsafe`.
pub unsafe trait RawPod: Sync + Sized + 'static {}

// SAFETY: integer atomics are plain integers in memory: every bit pattern
// is a valid value, mutation goes through atomic operations, no Drop.
unsafe impl RawPod for AtomicU8 {}
// SAFETY: as for AtomicU8.
unsafe impl RawPod for AtomicU16 {}
// SAFETY: as for AtomicU8.
unsafe impl RawPod for AtomicU32 {}
// SAFETY: as for AtomicU8.
unsafe impl RawPod for AtomicU64 {}
// SAFETY: as for AtomicU8.
unsafe impl RawPod for AtomicUsize {}
// SAFETY: as for AtomicU8.
unsafe impl RawPod for AtomicI8 {}
// SAFETY: as for AtomicU8.
unsafe impl RawPod for AtomicI16 {}
// SAFETY: as for AtomicU8.
unsafe impl RawPod for AtomicI32 {}
// SAFETY: as for AtomicU8.
unsafe impl RawPod for AtomicI64 {}
// SAFETY: as for AtomicU8.
unsafe impl RawPod for AtomicIsize {}
// SAFETY: an array of RawPod elements is valid for every bit pattern and
// mutable only through its elements' atomics; its layout is fixed.
unsafe impl<T: RawPod, const N: usize> RawPod for [T; N] {}

/// Declares a `#[repr(C)]` struct of [`RawPod`] fields and implements
/// `RawPod` for it; a field that is not `RawPod` is a compile error.
///
/// ```ignore
/// rtedge_kernel::raw_pod! {
///     /// What the shared-memory program keeps in the raw region.
///     pub struct Mailbox {
///         pub magic: AtomicU64,
///         pub value: AtomicI64,
///     }
/// }
/// ```
#[macro_export]
macro_rules! raw_pod {
    ($(#[$meta:meta])* $visibility:vis struct $name:ident { $($(#[$field_meta:meta])* $field_visibility:vis $field:ident : $type:ty),* $(,)? }) => {
        $(#[$meta])*
        #[repr(C)]
        $visibility struct $name {
            $($(#[$field_meta])* $field_visibility $field: $type),*
        }

        // SAFETY: `#[repr(C)]` with only `RawPod` fields (checked below):
        // every bit pattern is valid (padding may hold anything), mutation
        // only through the fields' atomics, and no Drop.
        unsafe impl $crate::memory::raw::RawPod for $name {}

        const _: () = {
            const fn field_is_raw_pod<T: $crate::memory::raw::RawPod>() {}
            $(field_is_raw_pod::<$type>();)*
        };
    };
}

/// Why a view of the region was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawError {
    /// `[offset, offset + len)` does not fit in the region.
    OutOfBounds { offset: u64, len: u64, region: u64 },
    /// The address is not aligned for the type.
    Misaligned { offset: u64, align: u64 },
    /// The range overlaps another claim (another type, or an exclusive one).
    Overlap { offset: u64, len: u64 },
    /// The claim table is full.
    TooManyClaims,
    /// Zero-sized types and ranges take no memory: nothing to give.
    ZeroSized,
}

impl core::fmt::Display for RawError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RawError::OutOfBounds { offset, len, region } => {
                write!(f, "range {offset:#x}+{len:#x} is outside the {region:#x}-byte raw region")
            }
            RawError::Misaligned { offset, align } => write!(f, "offset {offset:#x} is not {align}-byte aligned"),
            RawError::Overlap { offset, len } => write!(f, "range {offset:#x}+{len:#x} overlaps another claim"),
            RawError::TooManyClaims => f.write_str("too many claims on the raw region"),
            RawError::ZeroSized => f.write_str("zero-sized view"),
        }
    }
}

/// Most claims at once (typed views are never released).
pub const MAX_CLAIMS: usize = 32;

#[derive(Clone, Copy, PartialEq, Eq)]
enum ClaimKind {
    Typed(TypeId),
    Exclusive,
}

#[derive(Clone, Copy)]
struct Claim {
    start: u64,
    end: u64,
    kind: ClaimKind,
}

static CLAIMS: IrqSpinLock<[Option<Claim>; MAX_CLAIMS]> = IrqSpinLock::new([None; MAX_CLAIMS]);

/// The reserved raw region (a copyable description; the memory itself is
/// only reached through typed views and exclusive claims).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawRegion {
    base: u64,
    size: u64,
}

impl RawRegion {
    /// The region reserved at boot with `reserve=<size>`, if any.
    pub fn get() -> Option<RawRegion> {
        super::report().reserved_region.map(|(start, end)| RawRegion { base: start, size: end - start })
    }

    /// Physical (= virtual) address of the first byte.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Bytes in the region.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn check(&self, offset: u64, len: u64, align: u64) -> Result<(), RawError> {
        if len == 0 {
            return Err(RawError::ZeroSized);
        }
        if offset.checked_add(len).is_none_or(|end| end > self.size) {
            return Err(RawError::OutOfBounds { offset, len, region: self.size });
        }
        if !(self.base + offset).is_multiple_of(align) {
            return Err(RawError::Misaligned { offset, align });
        }
        Ok(())
    }

    /// Records a claim on `[offset, offset + len)`. A typed claim equal to
    /// an existing one (same range, same type) is accepted again.
    fn claim(&self, offset: u64, len: u64, kind: ClaimKind) -> Result<(), RawError> {
        let wanted = Claim { start: offset, end: offset + len, kind };
        let mut claims = CLAIMS.lock();
        for claim in claims.iter().flatten() {
            let overlaps = claim.start < wanted.end && wanted.start < claim.end;
            if !overlaps {
                continue;
            }
            let same_view =
                matches!(kind, ClaimKind::Typed(_)) && claim.kind == kind && claim.start == wanted.start && claim.end == wanted.end;
            return if same_view { Ok(()) } else { Err(RawError::Overlap { offset, len }) };
        }
        let free = claims.iter_mut().find(|slot| slot.is_none()).ok_or(RawError::TooManyClaims)?;
        *free = Some(wanted);
        Ok(())
    }

    /// A shared view of a `T` at `offset`, for the rest of the run. Safe
    /// from any context (never allocates).
    pub fn typed<T: RawPod>(&self, offset: u64) -> Result<&'static T, RawError> {
        let len = size_of::<T>() as u64;
        self.check(offset, len, align_of::<T>() as u64)?;
        self.claim(offset, len, ClaimKind::Typed(TypeId::of::<T>()))?;
        let address = self.base + offset;
        // The range lies inside the reserved region (checked), which the
        // kernel identity maps read/write for the whole run and gives to
        // nobody else, and it is aligned for `T` (checked). `T: RawPod` is
        // valid for any contents and mutable only through atomics.
        // SAFETY: so shared references are sound from every context; the
        // claim table keeps other types and exclusive owners off these bytes.
        Ok(unsafe { &*(address as *const T) })
    }

    /// Claims `[offset, offset + len)` for one owner until the returned
    /// [`RawBytes`] is dropped.
    pub fn exclusive(&self, offset: u64, len: u64) -> Result<RawBytes, RawError> {
        self.check(offset, len, 1)?;
        if usize::try_from(len).is_err() {
            return Err(RawError::OutOfBounds { offset, len, region: self.size });
        }
        self.claim(offset, len, ClaimKind::Exclusive)?;
        Ok(RawBytes { base: self.base, offset, len })
    }
}

/// Bytes of the raw region owned exclusively (until dropped).
#[derive(Debug)]
pub struct RawBytes {
    base: u64,
    offset: u64,
    len: u64,
}

impl RawBytes {
    /// Offset in the region.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Always false: empty claims are refused.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_slice(&self) -> &[u8] {
        // The range is inside the identity-mapped region (checked at claim time).
        // SAFETY: `self` claimed it exclusively; `&self` keeps it alive and unmodified.
        unsafe { core::slice::from_raw_parts((self.base + self.offset) as *const u8, self.len as usize) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; `&mut self` makes this the only access.
        unsafe { core::slice::from_raw_parts_mut((self.base + self.offset) as *mut u8, self.len as usize) }
    }
}

impl Drop for RawBytes {
    fn drop(&mut self) {
        let mut claims = CLAIMS.lock();
        for slot in claims.iter_mut() {
            if slot.is_some_and(|claim| {
                claim.kind == ClaimKind::Exclusive && claim.start == self.offset && claim.end == self.offset + self.len
            }) {
                *slot = None;
                break;
            }
        }
    }
}

/// Claims in use (typed views and exclusive ranges), for diagnostics.
pub fn claim_count() -> usize {
    CLAIMS.lock().iter().flatten().count()
}
