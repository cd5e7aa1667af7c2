//! The I/O APIC: routes device interrupt lines (GSIs) to a vector on a
//! chosen CPU. Unsafety is at construction (`IoApic::new` takes the MMIO
//! address); programming entries afterwards is safe.

/// Trigger mode of a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    Edge,
    Level,
}

/// Polarity of a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Polarity {
    High,
    Low,
}

/// One I/O APIC's registers.
#[derive(Debug)]
pub struct IoApic {
    base: u64,
    gsi_base: u32,
    lines: u32,
}

impl IoApic {
    /// # Safety
    /// `base` must be the I/O APIC's register window, mapped uncached, and
    /// no other `IoApic` may drive the same chip.
    pub unsafe fn new(base: u64, gsi_base: u32) -> Self {
        let mut chip = Self { base, gsi_base, lines: 0 };
        chip.lines = ((chip.read(1) >> 16) & 0xff) + 1;
        chip
    }

    fn read(&self, register: u32) -> u32 {
        // SAFETY: the window is the chip's (construction contract); IOREGSEL
        // then IOWIN is its access protocol.
        unsafe {
            core::ptr::write_volatile(self.base as *mut u32, register);
            core::ptr::read_volatile((self.base + 0x10) as *const u32)
        }
    }

    fn write(&self, register: u32, value: u32) {
        // SAFETY: as in `read`.
        unsafe {
            core::ptr::write_volatile(self.base as *mut u32, register);
            core::ptr::write_volatile((self.base + 0x10) as *mut u32, value);
        }
    }

    /// GSIs this chip serves.
    pub fn serves(&self, gsi: u32) -> bool {
        (self.gsi_base..self.gsi_base + self.lines).contains(&gsi)
    }

    /// Number of input lines.
    pub fn lines(&self) -> u32 {
        self.lines
    }

    /// Masks every line (boot state).
    pub fn mask_all(&self) {
        for line in 0..self.lines {
            self.write(0x10 + 2 * line, 1 << 16);
            self.write(0x11 + 2 * line, 0);
        }
    }

    /// Routes `gsi` to `vector` on the CPU with `apic_id` (fixed delivery,
    /// physical destination), unmasked.
    pub fn route(&self, gsi: u32, vector: u8, apic_id: u32, trigger: Trigger, polarity: Polarity) {
        if !self.serves(gsi) {
            return;
        }
        let line = gsi - self.gsi_base;
        let mut low = u32::from(vector);
        if polarity == Polarity::Low {
            low |= 1 << 13;
        }
        if trigger == Trigger::Level {
            low |= 1 << 15;
        }
        self.write(0x10 + 2 * line, 1 << 16); // mask while changing
        self.write(0x11 + 2 * line, apic_id << 24);
        self.write(0x10 + 2 * line, low);
    }

    /// Masks or unmasks `gsi`.
    pub fn set_masked(&self, gsi: u32, masked: bool) {
        if !self.serves(gsi) {
            return;
        }
        let register = 0x10 + 2 * (gsi - self.gsi_base);
        let low = self.read(register);
        self.write(register, if masked { low | (1 << 16) } else { low & !(1 << 16) });
    }
}
