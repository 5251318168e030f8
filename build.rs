//! Embeds every `detections/**/*.yml` (rules and `detections/lists/*.yml`) into the binary:
//! generates `$OUT_DIR/builtin_detections.rs` holding a table of (path below `detections/`,
//! `include_str!` of the file), sorted by path so the rule order is stable.

use std::path::{Path, PathBuf};

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            println!("cargo:rerun-if-changed={}", p.display());
            walk(&p, out);
        } else if matches!(p.extension().and_then(|x| x.to_str()), Some("yml" | "yaml")) {
            out.push(p);
        }
    }
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into()));
    let det = root.join("detections");
    // A directory entry makes cargo rescan the whole tree for changes; new files included.
    println!("cargo:rerun-if-changed={}", det.display());
    println!("cargo:rerun-if-changed=build.rs");
    let mut files = Vec::new();
    walk(&det, &mut files);
    files.sort();
    let mut src = String::from("/// Embedded detections: (path below `detections/`, text).\nstatic BUILTIN: &[(&str, &str)] = &[\n");
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
        let rel = f
            .strip_prefix(&det)
            .unwrap_or(f)
            .to_string_lossy()
            .replace('\\', "/");
        src.push_str(&format!(
            "    ({rel:?}, include_str!({:?})),\n",
            f.display().to_string()
        ));
    }
    src.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("builtin_detections.rs");
    // Rewrite only on change, so an unchanged tree does not force the library to recompile.
    if std::fs::read_to_string(&out).is_ok_and(|old| old == src) {
        return;
    }
    if let Err(e) = std::fs::write(&out, src) {
        panic!("cannot write {}: {e}", out.display());
    }
}
