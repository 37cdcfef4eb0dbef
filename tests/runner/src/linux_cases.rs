//! The end-to-end cases that boot Linux: the stock kernel judging the
//! counting PMU natively (and, later, as perfvisor's guest).

use crate::cases::Case;

/// Every Linux case.
pub fn all() -> Vec<Case> {
    Vec::new()
}
