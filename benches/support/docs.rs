//! Writes one benchmark's figures into its own marked section of docs/benchmarks.md,
//! keeping every other section as it is.

/// Replaces the text between `<!-- NAME:start -->` and `<!-- NAME:end -->` with
/// `section` (appends the block when the markers are missing).
pub fn write_section(name: &str, section: &str) {
    let start = format!("<!-- {name}:start -->");
    let end = format!("<!-- {name}:end -->");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/benchmarks.md");
    let old = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".to_string());
    let block = format!("{start}\n{section}{end}\n");
    let new = match (old.find(&start), old.find(&end)) {
        (Some(a), Some(b)) if b > a => format!(
            "{}{block}{}",
            &old[..a],
            old[b + end.len()..].trim_start_matches('\n')
        ),
        _ => format!("{}\n\n{block}", old.trim_end()),
    };
    match std::fs::write(&path, new) {
        Ok(()) => println!("wrote the {name} section of {}", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
}
