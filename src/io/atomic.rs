//! Writing outputs so that a crash never leaves a half-written file: the bytes go to a hidden
//! temporary name in the destination folder, which is renamed over the destination at the end.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Writes `path` by calling `fill` on a buffered writer to a temporary file, then renaming it.
/// On any error the temporary file is removed and `path` is left as it was.
pub fn write_atomically(path: &Path, fill: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    let temporary = temporary_path(path);
    let result = (|| {
        let file = File::create(&temporary).map_err(|e| Error::io(&temporary, e))?;
        let mut writer = BufWriter::with_capacity(1 << 20, file);
        fill(&mut writer)?;
        let file = writer.into_inner().map_err(|e| Error::io(&temporary, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&temporary, e))?;
        std::fs::rename(&temporary, path).map_err(|e| Error::io(path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

fn temporary_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        std::fs::write(&path, b"old").unwrap();
        let result = write_atomically(&path, |w| {
            w.write_all(b"half").map_err(|e| Error::io("x", e))?;
            Err(Error::Invalid("stopped".into()))
        });
        assert!(result.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        write_atomically(&path, |w| w.write_all(b"new").map_err(|e| Error::io("x", e))).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
    }
}
