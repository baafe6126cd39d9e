//! Loading the next kernel with kexec and jumping into it.
//!
//! [`load`] tries `kexec_file_load(2)` first (the running kernel parses the image, places the
//! segments and builds the DTB / boot params itself; the only path that works under lockdown, and
//! then only for a kernel signed with a trusted key). When the running kernel lacks it (`ENOSYS`,
//! `CONFIG_KEXEC_FILE` unset, as in Debian's arm64 cloud kernels), it falls back on arm64 to
//! `kexec_load(2)`, where user space places every segment itself: the `Image`, the initramfs, a
//! DTB built from `/sys/firmware/fdt` with `/chosen` rewritten, and a trampoline that sets x0
//! (see [`arm64`]). Usable RAM comes from `/proc/iomem` ([`iomem`]). On amd64 the fallback is not
//! implemented: `ENOSYS` there is a clear error.
//!
//! Nothing here prints; callers log the [`Syscall`] that [`load`] returns.
//! Syscall interfaces: include/uapi/linux/kexec.h and kernel/kexec.c, kernel/kexec_file.c,
//! kernel/kexec_core.c (Linux 6.1).

pub mod arm64;
pub mod fdt;
pub mod iomem;

use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use nix::errno::Errno;
use thiserror::Error;

/// Which kexec system call loads the next kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syscall {
    /// `kexec_file_load(2)` (the kernel reads the image from file descriptors).
    KexecFileLoad,
    /// `kexec_load(2)` (user space places the segments).
    KexecLoad,
}

impl fmt::Display for Syscall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Syscall::KexecFileLoad => "kexec_file_load",
            Syscall::KexecLoad => "kexec_load",
        })
    }
}

impl serde::Serialize for Syscall {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What [`planned`] expects [`load`] to use on this machine, without loading anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Planned {
    /// The kernel config says `CONFIG_KEXEC_FILE=y`.
    FileLoad,
    /// The kernel config has `CONFIG_KEXEC=y` but no `CONFIG_KEXEC_FILE`, on arm64.
    Load,
    /// No kernel config was readable: `kexec_file_load` is tried first.
    Unknown,
    /// [`load`] will fail: the reason.
    Unavailable(String),
}

impl fmt::Display for Planned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Planned::FileLoad => f.write_str("kexec_file_load"),
            Planned::Load => f.write_str("kexec_load"),
            Planned::Unknown => f.write_str("kexec_file_load (falls back to kexec_load on ENOSYS)"),
            Planned::Unavailable(why) => write!(f, "none ({why})"),
        }
    }
}

impl serde::Serialize for Planned {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Why loading (or unloading, or executing) the next kernel failed. Nothing is loaded after any
/// of these.
#[derive(Debug, Error)]
pub enum KexecError {
    /// The command line buffer is empty, lacks its terminating NUL, or is over 2048 bytes.
    #[error(
        "the kernel command line must be NUL-terminated and at most 2048 bytes including the NUL (got {len} bytes)"
    )]
    Cmdline {
        /// Its length in bytes.
        len: usize,
    },
    /// Reading a local input (`/proc/iomem`, `/sys/firmware/fdt`, a file descriptor) failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being read.
        what: String,
        /// The error.
        source: io::Error,
    },
    /// `EPERM`: not root / no CAP_SYS_BOOT, lockdown, or `kexec_load_disabled`.
    #[error("{syscall}: not permitted (EPERM): {hint}")]
    NotPermitted {
        /// The call.
        syscall: Syscall,
        /// What usually causes it for this call.
        hint: &'static str,
    },
    /// `EKEYREJECTED`, `ENOKEY`, `EBADMSG`, `ENOPKG`: the kernel's signature check failed.
    #[error(
        "{syscall}: the kernel's signature was not accepted ({errno}): under lockdown (Secure Boot) the running kernel only kexecs kernels signed with a key it trusts"
    )]
    Signature {
        /// The call.
        syscall: Syscall,
        /// The errno.
        errno: Errno,
    },
    /// `EBUSY`.
    #[error("{syscall}: busy (EBUSY): another kexec load is in progress, or the secondary CPUs cannot be stopped")]
    Busy {
        /// The call.
        syscall: Syscall,
    },
    /// `EINVAL`.
    #[error("{syscall}: invalid argument (EINVAL): {hint}")]
    Invalid {
        /// The call.
        syscall: Syscall,
        /// What usually causes it for this call.
        hint: &'static str,
    },
    /// `ENOMEM`.
    #[error("{syscall}: out of memory (ENOMEM): not enough free memory to stage the kernel and initramfs")]
    NoMemory {
        /// The call.
        syscall: Syscall,
    },
    /// `ENOEXEC` from `kexec_file_load`: no loader of the running kernel accepts the image.
    #[error("kexec_file_load: the running kernel cannot load this kernel image format (ENOEXEC)")]
    NotExecutable,
    /// `ETXTBSY`: a file descriptor was still open for writing.
    #[error("kexec_file_load: the kernel or initramfs is still open for writing (ETXTBSY)")]
    TextBusy,
    /// `ENOSYS` with no fallback.
    #[error("the running kernel cannot kexec: {0}")]
    Unsupported(String),
    /// Any other errno.
    #[error("{syscall} failed: {errno}")]
    Syscall {
        /// The call.
        syscall: Syscall,
        /// The errno.
        errno: Errno,
    },
    /// `/proc/iomem` is unusable.
    #[error(transparent)]
    Iomem(#[from] iomem::IomemError),
    /// `/sys/firmware/fdt` is unusable.
    #[error("/sys/firmware/fdt: {0}")]
    Fdt(#[from] fdt::FdtError),
    /// The segments do not fit in usable RAM.
    #[error(transparent)]
    Place(#[from] arm64::PlaceError),
    /// The kernel given to the arm64 `kexec_load` path is not a raw arm64 `Image`.
    #[error("kexec_load needs a raw arm64 Image (magic ARM\\x64 at offset 56); this kernel is not one")]
    NotArm64Image,
}

/// Largest command line buffer, NUL included (`COMMAND_LINE_SIZE` on arm64 and x86).
pub const COMMAND_LINE_SIZE: usize = 2048;
/// `KEXEC_SEGMENT_MAX` (include/linux/kexec.h).
const KEXEC_SEGMENT_MAX: usize = 16;

#[cfg(target_arch = "aarch64")]
const ARCH: &str = "arm64";
#[cfg(target_arch = "x86_64")]
const ARCH: &str = "amd64";
#[cfg(not(any(target_arch = "aarch64", target_arch = "x86_64")))]
const ARCH: &str = "unsupported";

/// `struct kexec_segment` (include/uapi/linux/kexec.h): a user buffer and its physical
/// destination; `mem` and `memsz` page-aligned, `memsz >= bufsz`.
#[repr(C)]
#[derive(Debug)]
struct KexecSegment {
    buf: *const libc::c_void,
    bufsz: libc::size_t,
    mem: libc::c_ulong,
    memsz: libc::size_t,
}

fn errno_result(ret: libc::c_long) -> Result<(), Errno> {
    if ret == 0 {
        Ok(())
    } else {
        Err(Errno::last())
    }
}

/// `kexec_file_load(kernel_fd, initrd_fd, cmdline_len, cmdline, flags)`.
fn sys_kexec_file_load(kernel: i32, initrd: i32, cmdline: &[u8], flags: libc::c_ulong) -> Result<(), Errno> {
    // SAFETY: the fds are plain integers the kernel checks; `cmdline` outlives the call and its
    // length is passed with it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_kexec_file_load,
            kernel as libc::c_long,
            initrd as libc::c_long,
            cmdline.len() as libc::c_ulong,
            cmdline.as_ptr(),
            flags,
        )
    };
    errno_result(ret)
}

/// `kexec_load(entry, nr_segments, segments, flags)`.
fn sys_kexec_load(entry: u64, segments: &[KexecSegment]) -> Result<(), Errno> {
    // SAFETY: every segment's buffer is valid for `bufsz` bytes for the duration of the call (the
    // kernel copies them before returning); the array length is passed with it. flags 0 =
    // KEXEC_ARCH_DEFAULT.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_kexec_load,
            entry as libc::c_ulong,
            segments.len() as libc::c_ulong,
            if segments.is_empty() { std::ptr::null() } else { segments.as_ptr() },
            0 as libc::c_ulong,
        )
    };
    errno_result(ret)
}

fn map_errno(syscall: Syscall, errno: Errno) -> KexecError {
    match errno {
        Errno::EPERM => KexecError::NotPermitted {
            syscall,
            hint: match syscall {
                Syscall::KexecFileLoad => {
                    "needs root (CAP_SYS_BOOT); under lockdown (Secure Boot) only kernels signed with a trusted key load, and /proc/sys/kernel/kexec_load_disabled=1 blocks it"
                }
                Syscall::KexecLoad => {
                    "needs root (CAP_SYS_BOOT); lockdown (Secure Boot) and /proc/sys/kernel/kexec_load_disabled=1 block kexec_load"
                }
            },
        },
        Errno::EKEYREJECTED | Errno::ENOKEY | Errno::EBADMSG | Errno::ENOPKG => {
            KexecError::Signature { syscall, errno }
        }
        Errno::EBUSY => KexecError::Busy { syscall },
        Errno::EINVAL => KexecError::Invalid {
            syscall,
            hint: match syscall {
                Syscall::KexecFileLoad => {
                    "the running kernel rejected the image, the initramfs or the command line (not a kernel it can boot, or the command line is not NUL-terminated)"
                }
                Syscall::KexecLoad => "the running kernel rejected the segments (overlapping, unaligned, or outside RAM)",
            },
        },
        Errno::ENOMEM => KexecError::NoMemory { syscall },
        Errno::ENOEXEC if syscall == Syscall::KexecFileLoad => KexecError::NotExecutable,
        Errno::ETXTBSY => KexecError::TextBusy,
        errno => KexecError::Syscall { syscall, errno },
    }
}

/// Reopens `file` read-only through `/proc/self/fd` and closes the original, so that no
/// writable descriptor remains: `kexec_file_load` refuses files open for writing
/// (`kernel_read_file` → `deny_write_access`, ETXTBSY), which a memfd from `memfd_create` is.
fn read_only(file: File, what: &str) -> Result<File, KexecError> {
    let path = format!("/proc/self/fd/{}", file.as_raw_fd());
    let ro = File::open(&path)
        .map_err(|source| KexecError::Io { what: format!("reopening the {what} read-only ({path})"), source })?;
    drop(file);
    Ok(ro)
}

/// Loads `kernel` + `initrd` with `cmdline` as the next kernel, ready for [`exec`].
///
/// `kernel`: an arm64 `Image` (raw, already unpacked) or an x86 bzImage; `initrd`: the initramfs;
/// both are consumed (reopened read-only, see below); they may be memfds. `cmdline`: the command
/// line with its terminating NUL, at most [`COMMAND_LINE_SIZE`] bytes
/// (`kernel_cmdline::Cmdline::as_kexec_bytes`).
///
/// Tries `kexec_file_load` first; on `ENOSYS` on arm64 uses `kexec_load` with the layout of
/// [`arm64`]. Returns the call that loaded the kernel. Any previously loaded kernel is replaced.
///
/// # Errors
/// [`KexecError`] (each variant says why); on error nothing new is loaded.
pub fn load(kernel: File, initrd: File, cmdline: &[u8]) -> Result<Syscall, KexecError> {
    if cmdline.is_empty() || cmdline.len() > COMMAND_LINE_SIZE || cmdline.last() != Some(&0) {
        return Err(KexecError::Cmdline { len: cmdline.len() });
    }
    let kernel = read_only(kernel, "kernel")?;
    let initrd = read_only(initrd, "initramfs")?;
    match sys_kexec_file_load(kernel.as_raw_fd(), initrd.as_raw_fd(), cmdline, 0) {
        Ok(()) => Ok(Syscall::KexecFileLoad),
        Err(Errno::ENOSYS) if ARCH == "arm64" => {
            load_arm64_segments(&kernel, &initrd, cmdline)?;
            Ok(Syscall::KexecLoad)
        }
        Err(Errno::ENOSYS) => Err(KexecError::Unsupported(format!(
            "kexec_file_load is not available (ENOSYS) and the kexec_load fallback is only implemented for arm64 (this is {ARCH})"
        ))),
        Err(e) => Err(map_errno(Syscall::KexecFileLoad, e)),
    }
}

/// A read-only private mapping of a whole file, unmapped on drop.
struct Mapping {
    ptr: std::ptr::NonNull<libc::c_void>,
    len: usize,
}

impl Mapping {
    fn new(file: &File, what: &str) -> Result<Mapping, KexecError> {
        let io_err = |source: io::Error| KexecError::Io { what: format!("mapping the {what}"), source };
        let len = file.metadata().map_err(io_err)?.len() as usize;
        let Some(nz) = std::num::NonZeroUsize::new(len) else {
            return Err(io_err(io::Error::new(io::ErrorKind::InvalidData, "empty file")));
        };
        // SAFETY: a fresh private read-only mapping; nothing else aliases it mutably.
        let ptr = unsafe {
            nix::sys::mman::mmap(
                None,
                nz,
                nix::sys::mman::ProtFlags::PROT_READ,
                nix::sys::mman::MapFlags::MAP_PRIVATE,
                file,
                0,
            )
        }
        .map_err(|e| io_err(e.into()))?;
        Ok(Mapping { ptr, len })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is `len` readable bytes for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr() as *const u8, self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        let _ = unsafe { nix::sys::mman::munmap(self.ptr, self.len) };
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as u64
    } else {
        4096
    }
}

/// Fills `buf` from the kernel's RNG without blocking; false when it is not ready yet.
fn getrandom(buf: &mut [u8]) -> bool {
    // SAFETY: `buf` is valid for writes of its length.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr() as *mut libc::c_void, buf.len(), libc::GRND_NONBLOCK) };
    n == buf.len() as isize
}

fn read_path(path: &str) -> Result<Vec<u8>, KexecError> {
    std::fs::read(path).map_err(|source| KexecError::Io { what: format!("reading {path}"), source })
}

/// The arm64 `kexec_load` path: iomem → layout → DTB → trampoline → segments.
fn load_arm64_segments(kernel: &File, initrd: &File, cmdline: &[u8]) -> Result<arm64::Layout, KexecError> {
    let kernel_map = Mapping::new(kernel, "kernel")?;
    let initrd_map = Mapping::new(initrd, "initramfs")?;
    let header = boot_artifact::kernel::arm64_header(kernel_map.bytes()).ok_or(KexecError::NotArm64Image)?;
    let iomem_text = String::from_utf8_lossy(&read_path("/proc/iomem")?).into_owned();
    let ram = iomem::usable_ram(&iomem::parse(&iomem_text)?)?;
    let current_dtb = read_path("/sys/firmware/fdt")?;

    // The DTB's size does not depend on the initrd addresses (fixed-size cells): size it first.
    let mut no_random = |_: &mut [u8]| true;
    let sizing = arm64::next_dtb(&current_dtb, cmdline, 0, 0, &mut no_random)?;
    let page = page_size();
    let layout = arm64::place(&ram, page, &header, kernel_map.len as u64, initrd_map.len as u64, sizing.len() as u64)?;
    let mut random = getrandom;
    let dtb = arm64::next_dtb(&current_dtb, cmdline, layout.initrd, layout.initrd + layout.initrd_len, &mut random)?;
    debug_assert_eq!(dtb.len(), sizing.len());
    let trampoline = arm64::trampoline(layout.dtb, layout.kernel);

    let seg = |buf: &[u8], mem: u64, memsz: u64| KexecSegment {
        buf: buf.as_ptr() as *const libc::c_void,
        bufsz: buf.len(),
        mem: mem as libc::c_ulong,
        memsz: memsz as libc::size_t,
    };
    let segments = [
        seg(kernel_map.bytes(), layout.kernel, layout.kernel_memsz),
        seg(initrd_map.bytes(), layout.initrd, layout.initrd_len.div_ceil(page) * page),
        seg(&dtb, layout.dtb, layout.dtb_memsz),
        seg(&trampoline, layout.trampoline, layout.trampoline_memsz),
    ];
    debug_assert!(segments.len() <= KEXEC_SEGMENT_MAX);
    sys_kexec_load(layout.trampoline, &segments).map_err(|e| match e {
        Errno::ENOSYS => KexecError::Unsupported("neither kexec_file_load nor kexec_load is available (ENOSYS)".into()),
        e => map_errno(Syscall::KexecLoad, e),
    })?;
    Ok(layout)
}

/// Unloads any kernel loaded for kexec (not an error when none is).
///
/// # Errors
/// [`KexecError`] from `kexec_file_load(…, KEXEC_FILE_UNLOAD)`, or from `kexec_load` with no
/// segments when the former is unavailable.
pub fn unload() -> Result<(), KexecError> {
    match sys_kexec_file_load(-1, -1, &[], libc::KEXEC_FILE_UNLOAD as libc::c_ulong) {
        Ok(()) => Ok(()),
        Err(Errno::ENOSYS) => sys_kexec_load(0, &[]).map_err(|e| map_errno(Syscall::KexecLoad, e)),
        Err(e) => Err(map_errno(Syscall::KexecFileLoad, e)),
    }
}

/// Flushes file systems (`sync(2)`) and reboots into the loaded kernel
/// (`reboot(LINUX_REBOOT_CMD_KEXEC)`). Returns only on failure (e.g. EINVAL: nothing loaded;
/// EPERM: not root).
pub fn exec() -> io::Error {
    nix::unistd::sync();
    match nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_KEXEC) {
        Ok(never) => match never {},
        Err(e) => e.into(),
    }
}

/// Which call [`load`] would use here, from the running kernel's config (`/proc/config.gz`, else
/// `/boot/config-$(uname -r)`) and the architecture, without any kexec system call.
pub fn planned() -> Planned {
    planned_from(ARCH, running_kernel_config().as_deref())
}

/// [`planned`] for an architecture (`arm64`, `amd64`) and kernel config text.
pub fn planned_from(arch: &str, config: Option<&str>) -> Planned {
    let Some(config) = config else { return Planned::Unknown };
    let set = |sym: &str| config.lines().any(|l| l.strip_prefix(sym).and_then(|r| r.strip_prefix('=')) == Some("y"));
    if set("CONFIG_KEXEC_FILE") {
        Planned::FileLoad
    } else if set("CONFIG_KEXEC") && arch == "arm64" {
        Planned::Load
    } else if set("CONFIG_KEXEC") {
        Planned::Unavailable(format!(
            "the running kernel has no CONFIG_KEXEC_FILE and the kexec_load fallback is only implemented for arm64, not {arch}"
        ))
    } else {
        Planned::Unavailable("the running kernel has neither CONFIG_KEXEC_FILE nor CONFIG_KEXEC".into())
    }
}

/// Limit on the decompressed size of `/proc/config.gz`.
const CONFIG_MAX: u64 = 4 << 20;

fn running_kernel_config() -> Option<String> {
    if let Ok(gz) = std::fs::read("/proc/config.gz") {
        let mut out = Vec::new();
        if boot_artifact::kernel::decompress("gzip", &gz[..], &mut out, CONFIG_MAX).is_ok() {
            return String::from_utf8(out).ok();
        }
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    std::fs::read_to_string(Path::new("/boot").join(format!("config-{}", release.trim()))).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_names() {
        assert_eq!(Syscall::KexecFileLoad.to_string(), "kexec_file_load");
        assert_eq!(serde_json::to_string(&Syscall::KexecLoad).unwrap(), "\"kexec_load\"");
        assert_eq!(Planned::Unknown.to_string(), "kexec_file_load (falls back to kexec_load on ENOSYS)");
    }

    #[test]
    fn plans_from_kernel_config() {
        let debian_arm64 = "CONFIG_KEXEC=y\n# CONFIG_KEXEC_FILE is not set\nCONFIG_KEXEC_CORE=y\n";
        let debian_amd64 = "CONFIG_KEXEC=y\nCONFIG_KEXEC_FILE=y\nCONFIG_KEXEC_SIG=y\n";
        assert_eq!(planned_from("arm64", Some(debian_arm64)), Planned::Load);
        assert_eq!(planned_from("amd64", Some(debian_amd64)), Planned::FileLoad);
        assert_eq!(planned_from("arm64", Some(debian_amd64)), Planned::FileLoad);
        assert!(matches!(planned_from("amd64", Some(debian_arm64)), Planned::Unavailable(_)));
        assert!(matches!(planned_from("arm64", Some("# CONFIG_KEXEC is not set\n")), Planned::Unavailable(_)));
        assert_eq!(planned_from("arm64", None), Planned::Unknown);
        // A symbol that only starts the same way does not count.
        assert_eq!(planned_from("arm64", Some("CONFIG_KEXEC_FILEX=y\nCONFIG_KEXEC=y\n")), Planned::Load);
    }

    #[test]
    fn refuses_bad_cmdlines_before_any_syscall() {
        let f = || File::open("/dev/null").unwrap();
        assert!(matches!(load(f(), f(), b"no nul"), Err(KexecError::Cmdline { len: 6 })));
        assert!(matches!(load(f(), f(), b""), Err(KexecError::Cmdline { len: 0 })));
        let long = vec![b'a'; COMMAND_LINE_SIZE].into_iter().chain([0]).collect::<Vec<_>>();
        assert!(matches!(load(f(), f(), &long), Err(KexecError::Cmdline { .. })));
    }

    #[test]
    fn errno_messages() {
        let m = map_errno(Syscall::KexecLoad, Errno::EPERM).to_string();
        assert!(m.starts_with("kexec_load: not permitted (EPERM)"), "{m}");
        assert!(matches!(map_errno(Syscall::KexecFileLoad, Errno::EKEYREJECTED), KexecError::Signature { .. }));
        assert!(map_errno(Syscall::KexecFileLoad, Errno::EBUSY).to_string().contains("EBUSY"));
        assert!(map_errno(Syscall::KexecLoad, Errno::ENOMEM).to_string().contains("ENOMEM"));
        assert!(map_errno(Syscall::KexecLoad, Errno::EINVAL).to_string().contains("segments"));
        assert!(map_errno(Syscall::KexecLoad, Errno::EIO).to_string().contains("kexec_load failed"));
    }
}
