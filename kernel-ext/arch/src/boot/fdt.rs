//! Just enough of a flattened device tree reader for uhyve's tree: find a
//! property by node path. Every read is bounds-checked against the header's
//! sizes, so a malformed tree yields `None`, never a fault past its end.

const MAGIC: u32 = 0xd00d_feed;
const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const NOP: u32 = 4;
const END: u32 = 9;

pub struct Fdt {
    bytes: &'static [u8],
    structure: core::ops::Range<usize>,
    strings: core::ops::Range<usize>,
}

fn be_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    let slice = bytes.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_be_bytes([slice[0], slice[1], slice[2], slice[3]]))
}

/// A big-endian u64 property value.
pub fn be_u64(bytes: &[u8]) -> Option<u64> {
    let array: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(array))
}

impl Fdt {
    /// # Safety
    /// `address` must point at readable memory holding at least the FDT header
    /// and the `totalsize` bytes it announces, valid for the kernel's lifetime.
    pub unsafe fn at(address: u64) -> Option<Fdt> {
        // SAFETY: the header (40 bytes) is readable per the caller.
        let header = unsafe { core::slice::from_raw_parts(address as *const u8, 40) };
        if be_u32(header, 0)? != MAGIC {
            return None;
        }
        let total = be_u32(header, 4)? as usize;
        if total > 1 << 20 {
            return None;
        }
        // SAFETY: the caller guarantees `totalsize` readable bytes.
        let bytes = unsafe { core::slice::from_raw_parts(address as *const u8, total) };
        let structure_start = be_u32(header, 8)? as usize;
        let strings_start = be_u32(header, 12)? as usize;
        let strings_size = be_u32(header, 32)? as usize;
        let structure_size = be_u32(header, 36)? as usize;
        let structure = structure_start..structure_start.checked_add(structure_size)?;
        let strings = strings_start..strings_start.checked_add(strings_size)?;
        if structure.end > total || strings.end > total {
            return None;
        }
        Some(Fdt { bytes, structure, strings })
    }

    fn string_at(&self, offset: usize) -> Option<&'static [u8]> {
        let start = self.strings.start.checked_add(offset)?;
        let rest = self.bytes.get(start..self.strings.end)?;
        let len = rest.iter().position(|&b| b == 0)?;
        Some(&rest[..len])
    }

    /// The value of property `name` of the node at `path` (e.g. `/chosen`),
    /// without a trailing NUL for string properties.
    pub fn property(&self, path: &[u8], name: &[u8]) -> Option<&'static [u8]> {
        let mut offset = self.structure.start;
        // Path components matched so far, and the current depth.
        let mut depth = 0usize;
        let mut matched = 0usize;
        let wanted: [&[u8]; 8] = {
            let mut parts: [&[u8]; 8] = [&[]; 8];
            for (count, part) in path.split(|&b| b == b'/').filter(|p| !p.is_empty()).enumerate() {
                *parts.get_mut(count)? = part;
            }
            parts
        };
        let wanted_len = wanted.iter().take_while(|p| !p.is_empty()).count();
        while offset < self.structure.end {
            let token = be_u32(self.bytes, offset)?;
            offset += 4;
            match token {
                BEGIN_NODE => {
                    let rest = self.bytes.get(offset..self.structure.end)?;
                    let len = rest.iter().position(|&b| b == 0)?;
                    let node = &rest[..len];
                    offset += (len + 1 + 3) & !3;
                    // The root node has an empty name and depth 0.
                    if depth >= 1 && depth == matched + 1 && matched < wanted_len {
                        let unit = node.split(|&b| b == b'@').next().unwrap_or(node);
                        if node == wanted[matched] || unit == wanted[matched] {
                            matched += 1;
                        }
                    }
                    depth += 1;
                }
                END_NODE => {
                    if matched + 1 == depth && matched > 0 {
                        matched -= 1;
                    }
                    depth = depth.checked_sub(1)?;
                }
                PROP => {
                    let len = be_u32(self.bytes, offset)? as usize;
                    let name_offset = be_u32(self.bytes, offset + 4)? as usize;
                    let value_start = offset + 8;
                    let value = self.bytes.get(value_start..value_start.checked_add(len)?)?;
                    offset = value_start + ((len + 3) & !3);
                    if matched == wanted_len && depth == wanted_len + 1 && self.string_at(name_offset)? == name {
                        let value = match value.last() {
                            Some(0) => &value[..value.len() - 1],
                            _ => value,
                        };
                        return Some(value);
                    }
                }
                NOP => {}
                END => return None,
                _ => return None,
            }
        }
        None
    }
}
