//! VM-entry MSR-load and VM-exit MSR-store/load lists (SDM vol. 3C
//! §25.7.2, §25.8.2): 16-byte entries, 16-byte aligned.

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C, align(16))]
pub struct MsrEntry {
    pub index: u32,
    pub reserved: u32,
    pub value: u64,
}

/// A list of up to `N` entries; `len()` goes into the count field, the
/// address of `entries` into the address field.
#[derive(Clone, Debug)]
#[repr(C, align(16))]
pub struct MsrList<const N: usize> {
    pub entries: [MsrEntry; N],
    len: usize,
}

/// The list is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListFull;

impl<const N: usize> MsrList<N> {
    pub const fn new() -> Self {
        Self { entries: [MsrEntry { index: 0, reserved: 0, value: 0 }; N], len: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `index` (or updates its value if present).
    pub fn set(&mut self, index: u32, value: u64) -> Result<(), ListFull> {
        if let Some(e) = self.entries[..self.len].iter_mut().find(|e| e.index == index) {
            e.value = value;
            return Ok(());
        }
        let slot = self.entries.get_mut(self.len).ok_or(ListFull)?;
        *slot = MsrEntry { index, reserved: 0, value };
        self.len += 1;
        Ok(())
    }

    pub fn get(&self, index: u32) -> Option<u64> {
        self.entries[..self.len].iter().find(|e| e.index == index).map(|e| e.value)
    }
}

impl<const N: usize> Default for MsrList<N> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_updates() {
        assert_eq!(core::mem::size_of::<MsrEntry>(), 16);
        let mut l = MsrList::<1>::new();
        l.set(0x38f, 1).unwrap();
        l.set(0x38f, 2).unwrap();
        assert_eq!((l.len(), l.get(0x38f)), (1, Some(2)));
        assert_eq!(l.set(0x390, 0), Err(ListFull));
        assert_eq!(core::mem::align_of::<MsrList<1>>() % 16, 0);
    }
}
