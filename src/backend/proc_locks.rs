//! Who holds a lock file, from `/proc/locks` (Linux), matched by device and
//! inode. Best effort: other systems, or a lock released meanwhile, give None.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// How many times the table is read before concluding nobody holds the
/// lock. The kernel hands `/proc/locks` out a page per `read`, restarting
/// its walk by line number each time, so a lock released elsewhere between
/// two reads shifts the rest of the list and one line can be skipped; on a
/// busy host it can be the holder's (seen in CI, with eight processes
/// locking and unlocking while a test read the table). Another pass finds it.
const READS: usize = 3;

/// The pid holding a granted lock on `lock_path`, if the OS tells.
pub(crate) fn holder_of(lock_path: &Path) -> Option<u32> {
    let meta = std::fs::symlink_metadata(lock_path).ok()?;
    (0..READS).find_map(|_| {
        let table = std::fs::read_to_string("/proc/locks").ok()?;
        find_holder(&table, meta.dev(), meta.ino())
    })
}

/// Parses lines such as `1: FLOCK  ADVISORY  WRITE 1785 fe:00:10010649 0 EOF`;
/// lines with `->` are blocked waiters, not holders.
fn find_holder(table: &str, dev: u64, ino: u64) -> Option<u32> {
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    table.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) == Some(&"->") || fields.len() < 6 {
            return None;
        }
        let pid: u32 = fields[4].parse().ok()?;
        let mut id = fields[5].split(':');
        let maj = u32::from_str_radix(id.next()?, 16).ok()?;
        let min = u32::from_str_radix(id.next()?, 16).ok()?;
        let inode: u64 = id.next()?.parse().ok()?;
        (maj == major && min == minor && inode == ino).then_some(pid)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_holders_and_skips_waiters() {
        let dev = libc::makedev(0xfe, 0);
        let table = "1: -> FLOCK  ADVISORY  WRITE 9 fe:00:77 0 EOF\n\
                     1: FLOCK  ADVISORY  WRITE 1785 fe:00:77 0 EOF\n\
                     2: POSIX  ADVISORY  READ 12 08:01:77 0 EOF\n";
        assert_eq!(find_holder(table, dev, 77), Some(1785));
        assert_eq!(find_holder(table, dev, 78), None);
        assert_eq!(find_holder("garbage\n\n", dev, 77), None);
    }
}
