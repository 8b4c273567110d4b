//! Helpers shared by the CLI test binaries (each uses a part).
#![allow(dead_code)]

pub mod s3d;

use std::collections::BTreeMap;
use std::path::Path;

/// Every primary-truth file (and the manifests) under a local root as path → bytes.
pub fn truths(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for sub in ["archive", "ig", "dla", "ofp"] {
        let mut stack = vec![root.join(sub)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let rel = p.strip_prefix(root).unwrap().display().to_string();
                    out.insert(rel, std::fs::read(&p).unwrap());
                }
            }
        }
    }
    out
}
