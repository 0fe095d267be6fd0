//! Every committed fuzz input, seeds and former crashes alike, through the
//! same entry points the fuzz targets drive (`resolvd::fuzz`), so a
//! regression fails `cargo test` without the nightly toolchain. A crash
//! found by `fuzz/run.sh` is kept by copying its input to
//! `fuzz/corpus/TARGET/seed-crash-NAME` once fixed.

use std::path::Path;

fn each_input(target: &str, run: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !name.starts_with("seed-") {
            continue;
        }
        let bytes = std::fs::read(&path).expect("readable input");
        run(&bytes);
        n += 1;
    }
    n
}

#[test]
fn query_parser_and_reply_writer_survive_every_committed_input() {
    assert!(each_input("query_reply", resolvd::fuzz::query_and_reply) >= 5);
}

#[test]
fn upstream_reply_checks_survive_every_committed_input() {
    assert!(each_input("upstream_reply", resolvd::fuzz::upstream_reply) >= 5);
}

#[test]
fn zone_file_reader_survives_every_committed_input() {
    assert!(each_input("zone_file", resolvd::fuzz::zone_text) >= 2);
}

#[test]
fn config_loader_survives_every_committed_input() {
    assert!(each_input("config", resolvd::fuzz::config_text) >= 2);
}
