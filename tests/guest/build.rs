//! Links the guest (only it: the native conformance kernel is an ordinary
//! bootloader kernel) at perfvisor_abi::layout::IMAGE_BASE with link.ld;
//! only for the real target (the host build is type-checked, never linked).
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    if std::env::var("TARGET").is_ok_and(|t| t == "x86_64-unknown-none") {
        println!("cargo:rustc-link-arg-bin=perfvisor-guest=-T{dir}/link.ld");
    }
    println!("cargo:rerun-if-changed=link.ld");
}
