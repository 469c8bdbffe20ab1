//! Size and free space of the filesystem holding a directory.

use std::path::Path;

/// (total, available to unprivileged writers) bytes of the filesystem holding `dir`.
pub fn space(dir: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let unit = st.f_frsize as u64;
    Ok((st.f_blocks as u64 * unit, st.f_bavail as u64 * unit))
}

/// Total size of the filesystem holding `dir` (0 when it cannot be read): the capacity a
/// data node offers.
pub fn capacity(dir: &Path) -> u64 {
    space(dir).map(|(total, _)| total).unwrap_or(0)
}

/// Human-readable bytes: `1.5 GiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{bytes} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn space_of_a_real_dir() {
        let (total, free) = super::space(std::path::Path::new("/")).unwrap();
        assert!(total > 0 && free <= total);
        assert_eq!(super::human(1536 * 1024 * 1024), "1.5 GiB");
        assert_eq!(super::human(12), "12 B");
    }
}
