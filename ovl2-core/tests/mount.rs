//! Real overlay mounts: the shared bodies in `faces/mount.rs` on the Rust face
//! (`ovl2-ffi/tests/mount.rs` runs them on the C face). They need root and overlayfs; under
//! CI=true they fail rather than skip.

mod common;
#[macro_use]
mod faces;

macro_rules! face_test {
    ($name:ident) => {
        face_test_on!(rust = ovl2_core::Driver, $name);
    };
}

#[path = "faces/mount.rs"]
mod shared;

/// The mount helpers read /proc/self/mountinfo. While a parallel test had something mounted
/// at a non-UTF-8 path, a UTF-8 read of that file failed and every mount looked gone, which
/// failed unrelated mount tests now and then ("a damaged record must not unmount a live
/// mount", "rw3 mounted").
#[test]
fn mountinfo_helpers_see_mounts_beside_a_non_utf8_mount_point() {
    use std::os::unix::ffi::OsStrExt;
    if !common::require_root() {
        return;
    }
    let s = common::Scratch::new("mountinfo-bytes");
    let odd = s.path().join(std::ffi::OsStr::from_bytes(b"odd \xff\\dir"));
    let plain = s.path().join("plain");
    for p in [&odd, &plain] {
        std::fs::create_dir(p).unwrap();
        rustix::mount::mount(c"tmpfs", p.as_path(), c"tmpfs", rustix::mount::MountFlags::empty(), c"size=1m").unwrap();
    }
    let seen = (common::mountinfo_options(&plain).is_some(), common::mountinfo_options(&odd).is_some());
    let under = common::mount_points_under(s.path());
    for p in [&odd, &plain] {
        rustix::mount::unmount(p.as_path(), rustix::mount::UnmountFlags::DETACH).unwrap();
    }
    assert_eq!(seen, (true, true), "both mounts are visible to the helpers");
    assert_eq!(under.len(), 2, "{under:?}");
}
