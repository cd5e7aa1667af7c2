//! Shared by the test files: a deterministic random generator, so every run
//! tests the same inputs and a failure can be replayed.

#![allow(dead_code, reason = "each test file uses a different part")]

/// Marsaglia's xorshift64*.
pub struct Random(u64);

impl Random {
    pub fn new(seed: u64) -> Random {
        Random(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound as u64) as usize
    }

    pub fn chance(&mut self, numerator: usize, denominator: usize) -> bool {
        self.below(denominator) < numerator
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// `length` bytes drawn from `alphabet`.
    pub fn bytes_from(&mut self, alphabet: &[u8], length: usize) -> Vec<u8> {
        (0..length).map(|_| *self.pick(alphabet)).collect()
    }

    /// Any bytes.
    pub fn bytes(&mut self, length: usize) -> Vec<u8> {
        (0..length).map(|_| self.next_u64() as u8).collect()
    }

    /// Applies one random mutation: flip, insert, delete, duplicate a run,
    /// or splice in a protocol-looking token.
    pub fn mutate(&mut self, input: &mut Vec<u8>) {
        const TOKENS: [&[u8]; 14] = [
            b"\r\n",
            b"\r",
            b"\n",
            b"*",
            b"$",
            b"-1",
            b"0",
            b"99999999999999999999",
            b"\"",
            b"'",
            b"\\x",
            b"%2\r\n",
            b"|1\r\n",
            b"*1000000\r\n",
        ];
        let position = if input.is_empty() { 0 } else { self.below(input.len() + 1) };
        match self.below(5) {
            0 if !input.is_empty() => {
                let index = self.below(input.len());
                input[index] ^= 1 << self.below(8);
            }
            1 => input.insert(position, self.next_u64() as u8),
            2 if !input.is_empty() => {
                let index = self.below(input.len());
                input.remove(index);
            }
            3 if !input.is_empty() => {
                let start = self.below(input.len());
                let end = (start + self.below(8) + 1).min(input.len());
                let run = input[start..end].to_vec();
                input.splice(position..position, run);
            }
            _ => {
                let token = *self.pick(&TOKENS);
                input.splice(position..position, token.iter().copied());
            }
        }
    }
}
