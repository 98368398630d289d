//! Gives the shared library its soname, so programs link against `libovl2.so.0` and keep
//! working across compatible updates (bump the soname while the ABI is 0.x and changes).

fn main() {
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if target_os == "linux" {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libovl2.so.0");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
