//! Finding physical room for what a loader places.

/// A half-open physical range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub start: u64,
    pub end: u64,
}

impl Range {
    pub const fn new(start: u64, end: u64) -> Self {
        Self { start, end }
    }

    pub fn overlaps(&self, other: &Range) -> bool {
        self.start < other.end && other.start < self.end
    }
}

fn align_up(x: u64, align: u64) -> Option<u64> {
    Some(x.checked_add(align - 1)? & !(align - 1))
}

/// The lowest `align`-aligned address `a` with `[a, a + size)` inside one
/// of `free`, overlapping none of `taken`, and within `[min, max)`.
/// `align` must be a power of two.
pub fn first_fit(free: &[Range], taken: &[Range], size: u64, align: u64, min: u64, max: u64) -> Option<u64> {
    let mut best: Option<u64> = None;
    for region in free {
        let mut at = align_up(region.start.max(min), align)?;
        loop {
            let end = at.checked_add(size)?;
            if end > region.end || end > max {
                break;
            }
            let want = Range::new(at, end);
            match taken.iter().filter(|t| t.overlaps(&want)).map(|t| t.end).max() {
                None => {
                    best = Some(best.map_or(at, |b| b.min(at)));
                    break;
                }
                Some(past) => at = align_up(past, align)?,
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_around_what_is_taken() {
        let free = [Range::new(0x1000, 0x9f000), Range::new(0x10_0000, 0x1000_0000)];
        let taken = [Range::new(0x100_0000, 0x230_0000)];
        let mib2 = 0x20_0000;
        assert_eq!(first_fit(&free, &taken, 0x400_0000, mib2, 0x100_0000, u64::MAX), Some(0x240_0000));
        assert_eq!(first_fit(&free, &taken, 0x1000, 0x1000, 0, u64::MAX), Some(0x1000));
        assert_eq!(first_fit(&free, &taken, 0x1000_0000, mib2, 0, u64::MAX), None);
        assert_eq!(first_fit(&free, &taken, 0x100_0000, mib2, 0, 0x200_0000), None);
        assert_eq!(first_fit(&free, &[], 0x10, 0x1000, 0x9f000, u64::MAX), Some(0x10_0000));
    }
}
