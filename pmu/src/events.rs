//! The architectural events and the rings they happen at.

/// The privilege level an event happens at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ring {
    User,
    Kernel,
}

/// The pre-defined architectural events (SDM vol. 3B Table 20-1) with their
/// event-select and umask encodings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchEvent {
    CoreCycles,
    InstructionsRetired,
    ReferenceCycles,
    LlcReferences,
    LlcMisses,
    BranchInstructionsRetired,
    BranchMissesRetired,
    TopdownSlots,
}

impl ArchEvent {
    pub const ALL: [ArchEvent; 8] = [
        Self::CoreCycles,
        Self::InstructionsRetired,
        Self::ReferenceCycles,
        Self::LlcReferences,
        Self::LlcMisses,
        Self::BranchInstructionsRetired,
        Self::BranchMissesRetired,
        Self::TopdownSlots,
    ];

    /// (event select, umask).
    pub fn encoding(self) -> (u8, u8) {
        match self {
            Self::CoreCycles => (0x3c, 0x00),
            Self::InstructionsRetired => (0xc0, 0x00),
            Self::ReferenceCycles => (0x3c, 0x01),
            Self::LlcReferences => (0x2e, 0x4f),
            Self::LlcMisses => (0x2e, 0x41),
            Self::BranchInstructionsRetired => (0xc4, 0x00),
            Self::BranchMissesRetired => (0xc5, 0x00),
            Self::TopdownSlots => (0xa4, 0x01),
        }
    }

    /// The fixed counter that counts this event (SDM vol. 3B Table 20-2).
    pub fn fixed_counter(self) -> Option<usize> {
        match self {
            Self::InstructionsRetired => Some(0),
            Self::CoreCycles => Some(1),
            Self::ReferenceCycles => Some(2),
            Self::TopdownSlots => Some(3),
            _ => None,
        }
    }
}
