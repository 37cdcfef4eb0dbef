//! Guest loaders for perfvisor's platform, shared by the hypervisor (Linux
//! as its guest), the native Linux boot kernel (tests/linux-native) and
//! xtask (which prepares the images on the host).
//!
//! Pure logic over byte slices: no allocation, no I/O, no `unsafe`. Every
//! error says in words what is wrong with the image.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod bundle;
pub mod linux;
