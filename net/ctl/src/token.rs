//! Where the token comes from when `--token` and `RTEDGE_TOKEN` are not
//! given: `target/rtedge/dev.token`, which building an image writes, found
//! by walking up from the current directory, then from the executable
//! (`target/release/rtctl` lives inside the repository it belongs to).

use std::fs;
use std::path::{Path, PathBuf};

/// The token file, relative to a repository root.
const TOKEN_FILE: &str = "target/rtedge/dev.token";

/// The token of a locally built image, if one can be found (`fleet.rs`
/// uses it; this branch's commands use [`discover_with_path`]).
#[allow(dead_code)]
pub fn discover() -> Option<String> {
    discover_with_path().map(|(token, _)| token)
}

/// The token of a locally built image, with the file it was read from.
pub fn discover_with_path() -> Option<(String, PathBuf)> {
    let current = std::env::current_dir().ok();
    let executable_directory = std::env::current_exe().ok().and_then(|path| path.parent().map(Path::to_path_buf));
    current.iter().chain(executable_directory.iter()).find_map(|start| find_path_from(start))
}

/// Reads the first `target/rtedge/dev.token` in `start` or its ancestors.
#[cfg(test)]
pub fn find_from(start: &Path) -> Option<String> {
    find_path_from(start).map(|(token, _)| token)
}

/// The first `target/rtedge/dev.token` in `start` or its ancestors, read.
fn find_path_from(start: &Path) -> Option<(String, PathBuf)> {
    let path = start.ancestors().map(|directory| directory.join(TOKEN_FILE)).find(|path| path.is_file())?;
    let token = fs::read_to_string(&path).ok()?.trim().to_owned();
    (!token.is_empty()).then_some((token, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nearest_ancestor_holding_the_token_wins() {
        let root = std::env::temp_dir().join(format!("rtctl-token-unit-{}", std::process::id()));
        let deep = root.join("a/b/c");
        fs::create_dir_all(&deep).ok();
        fs::create_dir_all(root.join("target/rtedge")).ok();
        fs::write(root.join(TOKEN_FILE), "outer-token\n").ok();
        assert_eq!(find_from(&deep).as_deref(), Some("outer-token"));
        fs::create_dir_all(root.join("a/target/rtedge")).ok();
        fs::write(root.join("a").join(TOKEN_FILE), "  inner  \n").ok();
        assert_eq!(find_from(&deep).as_deref(), Some("inner"));
        fs::remove_dir_all(&root).ok();
        assert_eq!(find_from(&deep), None);
    }
}
