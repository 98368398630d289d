//! `Driver::usage` (issue 14 item 4, `ovl2 du`): a layer's own blocks and inodes, hardlinks
//! once, symlinks not followed, parents not counted.

use std::os::unix::fs::MetadataExt;

use ovl2_core::{CreateOpts, ErrorKind, Usage};

mod common;
use common::*;

#[test]
fn usage_counts_the_layers_own_blocks_and_inodes() {
    let s = Scratch::new("usage");
    let d = open(&s.home());
    d.create("base", None, &CreateOpts::default()).unwrap();
    d.create("top", Some("base"), &CreateOpts::default()).unwrap();
    let diff = s.home().join("top/diff");
    let empty = d.usage("top").unwrap();
    let root_blocks = std::fs::metadata(&diff).unwrap().blocks() * 512;
    assert_eq!(empty, Usage { bytes: root_blocks, inodes: 1 }, "diff/ itself");
    // The parent's content is not the layer's.
    std::fs::write(s.home().join("base/diff/parents"), vec![0u8; 200_000]).unwrap();
    assert_eq!(d.usage("top").unwrap(), empty);
    std::fs::write(diff.join("f"), vec![1u8; 50_000]).unwrap();
    std::fs::hard_link(diff.join("f"), diff.join("g")).unwrap();
    std::fs::create_dir(diff.join("sub")).unwrap();
    // A symlink to the parent's big file counts as the link alone.
    std::os::unix::fs::symlink(s.home().join("base/diff/parents"), diff.join("sub/l")).unwrap();
    let blocks = |p: &str| std::fs::symlink_metadata(diff.join(p)).unwrap().blocks() * 512;
    let want = Usage { bytes: root_blocks + blocks("f") + blocks("sub") + blocks("sub/l"), inodes: 4 };
    assert_eq!(d.usage("top").unwrap(), want);
    assert!(want.bytes >= root_blocks + 50_000);
    assert_eq!(d.usage("missing").unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(d.usage("../x").unwrap_err().kind(), ErrorKind::InvalidArgument);
}
