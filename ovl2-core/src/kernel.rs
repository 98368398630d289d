//! What the running kernel and this process's namespace say, read from `/proc` and `/sys`: a
//! leaf that the mount engine, the feature probes, the tar extractor and `status()` all ask,
//! so none of them needs another.

/// Docker's names for backing filesystems, by statfs magic.
pub(crate) fn fs_name(magic: i64) -> &'static str {
    match magic as u64 {
        0xEF53 => "extfs",
        0x58465342 => "xfs",
        0x9123683E => "btrfs",
        0x01021994 => "tmpfs",
        0x794C7630 => "overlayfs",
        0x2FC12FC1 => "zfs",
        0xF2F52010 => "f2fs",
        0x6969 => "nfs",
        0x858458F6 => "ramfs",
        0x73717368 => "squashfs",
        0x65735546 => "fuse",
        0x28CD3D45 => "cramfs",
        0xE0F5E1E2 => "erofs",
        0x5346544E => "ntfs",
        0x4D44 => "vfat",
        _ => "<unknown>",
    }
}

/// A kernel overlay module parameter, if the module exposes it.
pub(crate) fn overlay_param(name: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/module/overlay/parameters/{name}")).ok().map(|s| s.trim().to_owned())
}

/// Every overlay module parameter as `name=value`, sorted (empty without the module).
pub(crate) fn overlay_params() -> Vec<String> {
    let mut params: Vec<String> = match std::fs::read_dir("/sys/module/overlay/parameters") {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                overlay_param(&n).map(|v| format!("{n}={v}"))
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    params.sort();
    params
}

/// Whether this process runs in a user namespace other than the initial one.
pub(crate) fn in_user_namespace() -> bool {
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(m) => {
            let f: Vec<&str> = m.split_whitespace().collect();
            f != ["0", "0", "4294967295"]
        }
        Err(_) => false,
    }
}

/// Whether the kernel knows the overlay filesystem (`/proc/filesystems`).
pub(crate) fn overlay_registered() -> bool {
    std::fs::read_to_string("/proc/filesystems")
        .map(|s| s.lines().any(|l| l.split_whitespace().last() == Some("overlay")))
        .unwrap_or(false)
}
