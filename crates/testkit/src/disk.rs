//! A disk that fails for real under a node: [`ThinDisk`], mounted at a node's data directory
//! before the node starts (see [`crate::ClusterBuilder::dir`]), then recovered the way an
//! operator recovers a failed disk. Building one mounts filesystems and attaches a loop device,
//! so it needs root ([`ThinDisk::available`] says whether this process has it).

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// An ext4 filesystem on a loop device whose backing file is a sparse file on a tmpfs much
/// smaller than the filesystem: a thin-provisioned volume that runs out of space. ext4 believes
/// it has room, so `write` succeeds into the page cache; the loop device finds its backing
/// store full only when the kernel writes those pages back, so `fsync` fails with EIO (and when
/// ext4's journal fails to write first, the filesystem aborts it and later writes fail). The
/// failure PostgreSQL's "fsyncgate" is about, with nothing mocked.
///
/// Dropping it unmounts everything and detaches the loop device.
#[derive(Debug)]
pub struct ThinDisk {
    /// Where the tmpfs holding the backing file is mounted.
    backing: tempfile::TempDir,
    backing_mounted: bool,
    /// What the filesystem believes it has.
    fs_bytes: u64,
    /// Where [`ThinDisk::recover_into`] mounts the checked filesystem to copy it.
    scratch: tempfile::TempDir,
    loop_device: Option<String>,
    /// Where the ext4 filesystem is mounted now.
    mounted: Option<PathBuf>,
}

impl ThinDisk {
    /// `Ok` when this process can build one (it runs as root); else why not.
    pub fn available() -> Result<(), String> {
        let status = std::fs::read_to_string("/proc/self/status").map_err(|e| format!("/proc/self/status: {e}"))?;
        let effective_uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            .ok_or("no Uid line in /proc/self/status")?;
        if effective_uid == "0" { Ok(()) } else { Err(format!("not root (uid {effective_uid})")) }
    }

    /// Builds a disk that can really store `backing_bytes` while its filesystem believes it has
    /// `fs_bytes` (make it larger than anything the node preallocates), and mounts it at `at`.
    pub fn mount(at: &Path, backing_bytes: u64, fs_bytes: u64) -> io::Result<ThinDisk> {
        let mut disk = ThinDisk {
            backing: tempfile::tempdir()?,
            backing_mounted: false,
            fs_bytes,
            scratch: tempfile::tempdir()?,
            loop_device: None,
            mounted: None,
        };
        let backing = path_str(disk.backing.path())?.to_string();
        run("mount", &["-t", "tmpfs", "-o", &format!("size={backing_bytes}"), "tmpfs", &backing])?;
        disk.backing_mounted = true;
        let image = disk.backing.path().join("disk.img");
        std::fs::File::create(&image)?.set_len(fs_bytes)?;
        // Lazy initialisation: mkfs writes (and so takes from the backing store) little.
        run("mkfs.ext4", &["-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1", path_str(&image)?])?;
        disk.loop_device = Some(run("losetup", &["--find", "--show", path_str(&image)?])?);
        disk.mount_at(at)?;
        Ok(disk)
    }

    fn mount_at(&mut self, at: &Path) -> io::Result<()> {
        let device = self.loop_device.clone().ok_or_else(|| io::Error::other("the loop device is detached"))?;
        run("mount", &[&device, path_str(at)?])?;
        self.mounted = Some(at.to_path_buf());
        Ok(())
    }

    /// What an operator does with the failed disk once the node has stopped: unmount it, give
    /// it room (the backing store grows past the filesystem's size), check the filesystem
    /// (`e2fsck` replays its journal), and copy everything on it into `dest`, a directory on a
    /// working disk. The disk is taken apart afterwards. Returns e2fsck's report.
    pub fn recover_into(&mut self, dest: &Path) -> io::Result<String> {
        if let Some(at) = self.mounted.take() {
            run("umount", &[path_str(&at)?])?;
        }
        // Room for every block of the filesystem, and more.
        let grown = format!("remount,size={}", 2 * self.fs_bytes);
        run("mount", &["-o", &grown, path_str(self.backing.path())?])?;
        let device = self.loop_device.clone().ok_or_else(|| io::Error::other("the loop device is detached"))?;
        let fsck = Command::new("e2fsck").args(["-f", "-y", &device]).output()?;
        let report = format!("{}\n{}", fsck.status, String::from_utf8_lossy(&fsck.stdout).trim());
        // 0: clean; 1 and 2: errors corrected; 4 and above: not corrected.
        if fsck.status.code().is_none_or(|c| c >= 4) {
            return Err(io::Error::other(format!("e2fsck could not repair the filesystem: {report}")));
        }
        let scratch = self.scratch.path().to_path_buf();
        self.mount_at(&scratch)?;
        run("cp", &["-a", &format!("{}/.", path_str(&scratch)?), path_str(dest)?])?;
        let _ = std::fs::remove_dir_all(dest.join("lost+found"));
        self.teardown();
        Ok(report)
    }

    fn teardown(&mut self) {
        if let Some(at) = self.mounted.take() {
            // Lazy: a process still holding a file there must not keep the mount, and with it
            // the loop device, alive after the test.
            let _ = run("umount", &["-l", &at.to_string_lossy()]);
        }
        if let Some(device) = self.loop_device.take() {
            let _ = run("losetup", &["-d", &device]);
        }
        if std::mem::take(&mut self.backing_mounted) {
            let _ = run("umount", &["-l", &self.backing.path().to_string_lossy()]);
        }
    }
}

impl Drop for ThinDisk {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// A small filesystem (a tmpfs of a given size) mounted at a node's data directory before the
/// node starts, so the node runs out of space for real; [`SmallDisk::grow`] gives it more, as an
/// operator resizing a volume does. Needs root ([`ThinDisk::available`]).
pub struct SmallDisk {
    at: PathBuf,
    mounted: bool,
}

impl SmallDisk {
    pub fn mount(at: &Path, bytes: u64) -> io::Result<SmallDisk> {
        run("mount", &["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs", path_str(at)?])?;
        Ok(SmallDisk { at: at.to_path_buf(), mounted: true })
    }

    /// Resizes the filesystem to `bytes`, keeping what it holds.
    pub fn grow(&self, bytes: u64) -> io::Result<()> {
        run("mount", &["-o", &format!("remount,size={bytes}"), path_str(&self.at)?]).map(drop)
    }

    /// Bytes still free on it.
    pub fn free_bytes(&self) -> io::Result<u64> {
        let out = run("df", &["--output=avail", "-B1", path_str(&self.at)?])?;
        out.lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| io::Error::other(format!("df printed no size: {out}")))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        if std::mem::take(&mut self.mounted) {
            let _ = run("umount", &["-l", &self.at.to_string_lossy()]);
        }
    }
}

fn path_str(p: &Path) -> io::Result<&str> {
    p.to_str().ok_or_else(|| io::Error::other(format!("{} is not UTF-8", p.display())))
}

/// Runs a command; its trimmed stdout, or an error naming it and quoting its stderr.
fn run(program: &str, args: &[&str]) -> io::Result<String> {
    let out =
        Command::new(program).args(args).output().map_err(|e| io::Error::new(e.kind(), format!("{program}: {e}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(io::Error::other(format!(
            "{program} {args:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}
