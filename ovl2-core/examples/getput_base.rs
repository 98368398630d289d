//! Syscalls of a base layer's get + put (Docker's `GetEmpty`), for `strace -c -f`.
//!
//! `cargo run --release -p ovl2-core --example getput_base [N]` makes a store under the temp
//! dir, runs N get+put pairs of a base layer and removes the store. Count a run of N and a run
//! of 0 and difference them, so the store's setup cancels out.

use ovl2_core::{CreateOpts, Driver, Options};

fn main() {
    let n: u64 = std::env::args().nth(1).map_or(10_000, |a| a.parse().expect("N: a count of get+put pairs"));
    let home = std::env::temp_dir().join(format!("ovl2-getput-base-{}", std::process::id()));
    {
        let d = Driver::open(&home, Options { sync: false, ..Options::default() }).expect("open");
        d.create("base", None, &CreateOpts::default()).expect("create");
        for _ in 0..n {
            d.get("base", None).expect("get");
            d.put("base").expect("put");
        }
    }
    std::fs::remove_dir_all(&home).expect("removing the store");
}
