//! Reading the first fields of a NAL unit's RBSP: bits and Exp-Golomb numbers (H.264 §7.2,
//! §9.1), skipping emulation-prevention bytes (`00 00 03`, §7.4.1) as it goes.
//!
//! The relay only reads a few fields at the start of a parameter set (its id), so this reader
//! is deliberately small: no `more_rbsp_data`, no signed values.

/// A bit reader over NAL bytes (after the NAL header).
pub(crate) struct Bits<'a> {
    data: &'a [u8],
    /// Index of the next byte to load.
    pos: usize,
    /// The current byte and how many of its bits are still unread.
    cur: u8,
    left: u8,
    /// Zero bytes in a row just read, for emulation prevention.
    zeros: u8,
}

impl<'a> Bits<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Bits {
            data,
            pos: 0,
            cur: 0,
            left: 0,
            zeros: 0,
        }
    }

    fn load(&mut self) -> Option<()> {
        let mut b = *self.data.get(self.pos)?;
        self.pos += 1;
        if self.zeros >= 2 && b == 3 {
            // An emulation-prevention byte: not part of the RBSP.
            self.zeros = 0;
            b = *self.data.get(self.pos)?;
            self.pos += 1;
        }
        self.zeros = if b == 0 { self.zeros + 1 } else { 0 };
        self.cur = b;
        self.left = 8;
        Some(())
    }

    /// One bit.
    pub(crate) fn bit(&mut self) -> Option<u32> {
        if self.left == 0 {
            self.load()?;
        }
        self.left -= 1;
        Some(u32::from((self.cur >> self.left) & 1))
    }

    /// `n` bits (at most 32), most significant first.
    pub(crate) fn bits(&mut self, n: u32) -> Option<u32> {
        let mut v: u32 = 0;
        for _ in 0..n.min(32) {
            v = (v << 1) | self.bit()?;
        }
        Some(v)
    }

    /// Skips `n` bits.
    pub(crate) fn skip(&mut self, n: u32) -> Option<()> {
        for _ in 0..n {
            self.bit()?;
        }
        Some(())
    }

    /// An unsigned Exp-Golomb number, `ue(v)`; `None` past 31 leading zeros (not a valid id).
    pub(crate) fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let rest = self.bits(zeros)?;
        Some(((1u64 << zeros) - 1 + u64::from(rest)) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_golomb() {
        // 1 | 010 | 011 | 00100 | 00101 → 0, 1, 2, 3, 4
        let mut b = Bits::new(&[0b1010_0110, 0b0100_0010, 0b1000_0000]);
        assert_eq!(
            (0..5).map(|_| b.ue()).collect::<Vec<_>>(),
            vec![Some(0), Some(1), Some(2), Some(3), Some(4)]
        );
        assert_eq!(Bits::new(&[]).ue(), None);
        assert_eq!(Bits::new(&[0, 0, 0, 0, 0]).ue(), None);
    }

    #[test]
    fn skips_emulation_prevention() {
        // 00 00 03 01: the 03 is dropped, so the 17th-24th bits are 0x01.
        let mut b = Bits::new(&[0, 0, 3, 1]);
        assert_eq!(b.bits(16), Some(0));
        assert_eq!(b.bits(8), Some(1));
        assert_eq!(b.bit(), None);
    }
}
