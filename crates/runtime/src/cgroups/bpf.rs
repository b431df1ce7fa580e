//! The bpf(2) calls that install a device program on a cgroup2 directory.
//!
//! Only what the device filter needs: `BPF_PROG_LOAD` of a
//! `BPF_PROG_TYPE_CGROUP_DEVICE` program, `BPF_PROG_ATTACH`/`DETACH` with
//! attach type `BPF_CGROUP_DEVICE`, `BPF_PROG_QUERY` of the programs
//! attached to a cgroup, `BPF_PROG_GET_FD_BY_ID` and
//! `BPF_OBJ_GET_INFO_BY_FD` (for a program's name). The attribute structs
//! are the leading fields of the kernel's `union bpf_attr` members for these
//! commands, declared `repr(C)` here; the kernel zero-extends a shorter
//! attribute, so they work on every kernel that has the commands.
//!
//! # Replacing a program
//! [`install`] loads the new program, notes the programs already attached
//! directly to the cgroup, attaches the new one with `BPF_F_ALLOW_MULTI`
//! and then detaches the old ones that are this runtime's (named
//! [`PROG_NAME`]). Between the attach and the detach both programs run and
//! an access must pass both, so the switch is never looser than either
//! rule set. Programs attached by others are left alone. A program lives as
//! long as something references it: once attached, the cgroup does, so the
//! runtime keeps no fd; removing the cgroup releases it.
//!
//! # License
//! The kernel wants a license string with every program; it matters only
//! for helpers restricted to GPL-compatible programs. Device programs call
//! no helper at all, so the program declares the license of the code that
//! generates it, this crate's ([`LICENSE`]).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::device_filter::Insn;

/// The name this runtime gives its device programs (at most 15 bytes).
pub const PROG_NAME: &str = "berth_devices";
/// The license declared for the generated programs (this crate's).
pub const LICENSE: &str = "Apache-2.0";

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;
/// The verifier log kept for an error message (bytes).
const LOG_SIZE: usize = 256 * 1024;

/// A bpf(2) failure.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    /// A bpf(2) command (or opening the cgroup) failed.
    #[error("{op}: {source}")]
    Syscall {
        /// The command.
        op: &'static str,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// The kernel refused the program; `log` is the verifier's explanation.
    #[error("BPF_PROG_LOAD: {source}{}", log_suffix(.log))]
    Load {
        /// The errno.
        #[source]
        source: io::Error,
        /// The verifier log (its tail when long), empty when there was none.
        log: String,
    },
}

impl BpfError {
    /// The errno of the failure.
    pub fn errno(&self) -> Option<i32> {
        match self {
            BpfError::Syscall { source, .. } | BpfError::Load { source, .. } => {
                source.raw_os_error()
            }
        }
    }

    /// Whether the kernel refused this process cgroup device programs as
    /// such, rather than this program: a bpf(2) call failed with `ENOSYS`
    /// (no bpf(2): a kernel without `CONFIG_BPF_SYSCALL`, or a seccomp
    /// filter), `EINVAL` without a verifier log (no device program type or
    /// attach type: a kernel without `CONFIG_CGROUP_BPF`) or `EPERM` (no
    /// `CAP_BPF`/`CAP_SYS_ADMIN`, an LSM's veto, a seccomp filter such as
    /// Docker's default one). Not a refusal: a program the verifier
    /// rejected (it comes with its log, and is this crate's bug), any other
    /// errno, or a failure to open the cgroup directory.
    pub fn is_refusal(&self) -> bool {
        let refused = matches!(
            self.errno(),
            Some(libc::ENOSYS | libc::EINVAL | libc::EPERM)
        );
        match self {
            BpfError::Syscall { op, .. } => refused && *op != OPEN_CGROUP,
            BpfError::Load { log, .. } => refused && log.is_empty(),
        }
    }
}

/// The `op` of a failure to open the cgroup directory.
const OPEN_CGROUP: &str = "open cgroup";

/// `; verifier log: <log>`, or nothing when the kernel wrote no log (it
/// refused the program before verifying it).
fn log_suffix(log: &str) -> String {
    if log.is_empty() {
        String::new()
    } else {
        format!("; verifier log: {log}")
    }
}

fn sys_err(op: &'static str) -> impl FnOnce(io::Error) -> BpfError {
    move |source| BpfError::Syscall { op, source }
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct GetFdByIdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct InfoByFdAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The leading fields of `struct bpf_prog_info`, up to the name.
#[repr(C)]
#[derive(Default)]
struct ProgInfo {
    typ: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
    load_time: u64,
    created_by_uid: u32,
    nr_map_ids: u32,
    map_ids: u64,
    name: [u8; 16],
}

/// Calls bpf(2) with `attr`; returns the non-negative result.
///
/// # Safety
/// Every pointer stored in `attr` must be valid for the kernel to read (or,
/// for output buffers, write) for the length stated beside it.
unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live repr(C) struct of the size passed; the
    // pointers inside it are the caller's obligation (see above).
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            size_of::<T>(),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn fd_from(r: libc::c_long) -> io::Result<OwnedFd> {
    let fd = i32::try_from(r).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned this fd to us; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn as_u32_fd(fd: &impl AsRawFd) -> u32 {
    // fds are non-negative.
    fd.as_raw_fd() as u32
}

/// Loads `insns` as a device program named [`PROG_NAME`].
///
/// Errors: [`BpfError::Load`] with the verifier log when the kernel refuses
/// it (the load is retried once with logging on to get the log).
pub fn load(insns: &[Insn]) -> Result<OwnedFd, BpfError> {
    load_named(insns, PROG_NAME)
}

/// [`load`] under another name (at most 15 bytes of `[A-Za-z0-9_.]`).
fn load_named(insns: &[Insn], prog_name: &str) -> Result<OwnedFd, BpfError> {
    let license = CString::new(LICENSE).map_err(|_| BpfError::Load {
        source: io::Error::from_raw_os_error(libc::EINVAL),
        log: String::new(),
    })?;
    let insn_cnt = u32::try_from(insns.len()).map_err(|_| BpfError::Load {
        source: io::Error::from_raw_os_error(libc::E2BIG),
        log: String::new(),
    })?;
    let mut name = [0u8; 16];
    let len = prog_name.len().min(15);
    name[..len].copy_from_slice(&prog_name.as_bytes()[..len]);
    let attr = || ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        ..Default::default()
    };
    let mut a = attr();
    // SAFETY: insns/license point to live buffers of insn_cnt instructions
    // and a NUL-terminated string; no log buffer.
    let first = unsafe { bpf(BPF_PROG_LOAD, &mut a) };
    let source = match first.and_then(fd_from) {
        Ok(fd) => return Ok(fd),
        Err(e) => e,
    };
    let mut log = vec![0u8; LOG_SIZE];
    let mut a = attr();
    a.log_level = 1;
    a.log_size = LOG_SIZE as u32;
    a.log_buf = log.as_mut_ptr() as u64;
    // SAFETY: as above, plus a writable log buffer of log_size bytes.
    match unsafe { bpf(BPF_PROG_LOAD, &mut a) }.and_then(fd_from) {
        // A load that works on the second try is fine too.
        Ok(fd) => Ok(fd),
        Err(_) => {
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            let tail: String = text
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            Err(BpfError::Load { source, log: tail })
        }
    }
}

/// Opens a cgroup2 directory for attaching.
fn open_cgroup(dir: &Path) -> Result<OwnedFd, BpfError> {
    let c = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| sys_err(OPEN_CGROUP)(io::Error::from_raw_os_error(libc::EINVAL)))?;
    // SAFETY: a valid NUL-terminated path; the flags create nothing.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(sys_err(OPEN_CGROUP)(io::Error::last_os_error()));
    }
    // SAFETY: open just returned this fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The ids of the device programs attached directly to the cgroup `cg`.
fn query(cg: &OwnedFd) -> Result<Vec<u32>, BpfError> {
    let mut ids = vec![0u32; 16];
    loop {
        let mut a = QueryAttr {
            target_fd: as_u32_fd(cg),
            attach_type: BPF_CGROUP_DEVICE,
            prog_ids: ids.as_mut_ptr() as u64,
            prog_cnt: ids.len() as u32,
            ..Default::default()
        };
        // SAFETY: prog_ids points to a writable array of prog_cnt u32s.
        match unsafe { bpf(BPF_PROG_QUERY, &mut a) } {
            Ok(_) => {
                ids.truncate(a.prog_cnt as usize);
                return Ok(ids);
            }
            // The kernel wrote the real count: retry with room for it.
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && a.prog_cnt as usize > ids.len() => {
                ids = vec![0u32; a.prog_cnt as usize];
            }
            Err(e) => return Err(sys_err("BPF_PROG_QUERY")(e)),
        }
    }
}

fn prog_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut a = GetFdByIdAttr {
        prog_id: id,
        ..Default::default()
    };
    // SAFETY: the attribute holds no pointers.
    unsafe { bpf(BPF_PROG_GET_FD_BY_ID, &mut a) }.and_then(fd_from)
}

/// The id and name of the program `fd`.
fn prog_info(fd: &OwnedFd) -> io::Result<(u32, String)> {
    let mut info = ProgInfo::default();
    let mut a = InfoByFdAttr {
        bpf_fd: as_u32_fd(fd),
        info_len: size_of::<ProgInfo>() as u32,
        info: &mut info as *mut ProgInfo as u64,
    };
    // SAFETY: info points to a writable ProgInfo of info_len bytes; its
    // pointer fields are zero, so the kernel copies nothing else out.
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut a) }?;
    let end = info.name.iter().position(|b| *b == 0).unwrap_or(16);
    Ok((
        info.id,
        String::from_utf8_lossy(&info.name[..end]).into_owned(),
    ))
}

fn prog_name(fd: &OwnedFd) -> io::Result<String> {
    prog_info(fd).map(|(_, name)| name)
}

fn attach_op(
    cmd: libc::c_long,
    op: &'static str,
    cg: &OwnedFd,
    prog: &OwnedFd,
    flags: u32,
) -> Result<(), BpfError> {
    let mut a = AttachAttr {
        target_fd: as_u32_fd(cg),
        attach_bpf_fd: as_u32_fd(prog),
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: flags,
        ..Default::default()
    };
    // SAFETY: the attribute holds fds, no pointers.
    unsafe { bpf(cmd, &mut a) }.map(drop).map_err(sys_err(op))
}

/// A device program attached to a cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedProgram {
    /// The kernel's program id.
    pub id: u32,
    /// The program's name ([`PROG_NAME`] for this runtime's).
    pub name: String,
}

/// The device programs attached directly to the cgroup2 directory `dir`
/// (not those inherited from its parents).
///
/// Errors: [`BpfError::Syscall`] when the directory cannot be opened or
/// queried. A program that goes away meanwhile is left out.
pub fn attached(dir: &Path) -> Result<Vec<AttachedProgram>, BpfError> {
    let cg = open_cgroup(dir)?;
    let mut out = Vec::new();
    for id in query(&cg)? {
        let Ok(fd) = prog_fd_by_id(id) else { continue };
        let name = prog_name(&fd).map_err(sys_err("BPF_OBJ_GET_INFO_BY_FD"))?;
        out.push(AttachedProgram { id, name });
    }
    Ok(out)
}

/// Whether a BPF program with id `id` is still loaded in the kernel (for
/// checking that a removed cgroup released its program; the kernel frees
/// it asynchronously, shortly after the cgroup is gone).
///
/// Errors: a failure other than "no such program" (`ENOENT`).
pub fn is_loaded(id: u32) -> Result<bool, BpfError> {
    match prog_fd_by_id(id) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(sys_err("BPF_PROG_GET_FD_BY_ID")(e)),
    }
}

/// Installs `insns` as the device program of the cgroup2 directory `dir`,
/// replacing this runtime's previous one (see the module docs); returns the
/// new program's id.
///
/// Errors: [`BpfError::Load`] (with the verifier log) when the kernel
/// refuses the program; [`BpfError::Syscall`] when the directory cannot be
/// opened, or attaching or detaching fails. When the attach fails, the
/// previous program stays in place; when detaching an old one fails, the new
/// one is attached as well (the stricter combination holds).
pub fn install(dir: &Path, insns: &[Insn]) -> Result<u32, BpfError> {
    let cg = open_cgroup(dir)?;
    let prog = load(insns)?;
    let (new_id, _) = prog_info(&prog).map_err(sys_err("BPF_OBJ_GET_INFO_BY_FD"))?;
    let old = query(&cg)?;
    attach_op(
        BPF_PROG_ATTACH,
        "BPF_PROG_ATTACH",
        &cg,
        &prog,
        BPF_F_ALLOW_MULTI,
    )?;
    for id in old {
        let fd = match prog_fd_by_id(id) {
            Ok(fd) => fd,
            // Detached and freed meanwhile.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(sys_err("BPF_PROG_GET_FD_BY_ID")(e)),
        };
        if prog_name(&fd).map_err(sys_err("BPF_OBJ_GET_INFO_BY_FD"))? != PROG_NAME {
            continue;
        }
        match attach_op(BPF_PROG_DETACH, "BPF_PROG_DETACH", &cg, &fd, 0) {
            Ok(()) => {}
            // Detached by a concurrent install.
            Err(e) if e.errno() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(new_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::device_filter::{DeviceRule, RuleType, compile};

    #[test]
    fn attribute_layouts_match_the_kernel() {
        use std::mem::size_of;
        assert_eq!(size_of::<ProgLoadAttr>(), 72);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, prog_name), 48);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, expected_attach_type), 68);
        assert_eq!(size_of::<AttachAttr>(), 20);
        assert_eq!(std::mem::offset_of!(QueryAttr, prog_ids), 16);
        assert_eq!(std::mem::offset_of!(QueryAttr, prog_cnt), 24);
        assert_eq!(std::mem::offset_of!(ProgInfo, name), 64);
        assert!(PROG_NAME.len() < 16);
    }

    fn root() -> bool {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if !root {
            assert!(std::env::var_os("CI").is_none(), "CI runs as root");
            eprintln!("skipping: loading BPF programs needs root");
        }
        root
    }

    /// The kernel's verifier accepts what the emitter produces (loading
    /// without attaching changes nothing on the host).
    #[test]
    fn the_kernel_accepts_compiled_programs() {
        if !root() {
            return;
        }
        let rules = [
            DeviceRule {
                allow: false,
                typ: RuleType::All,
                major: None,
                minor: None,
                access: 7,
            },
            DeviceRule {
                allow: true,
                typ: RuleType::Char,
                major: Some(1),
                minor: Some(3),
                access: 6,
            },
            DeviceRule {
                allow: false,
                typ: RuleType::Block,
                major: None,
                minor: Some(0),
                access: 4,
            },
        ];
        for n in 0..=rules.len() {
            let fd = load(&compile(&rules[..n])).unwrap();
            assert_eq!(prog_name(&fd).unwrap(), PROG_NAME);
        }
    }

    /// The longest rule list the runtime accepts (MAX_RULES spec rules plus
    /// its own) stays within the verifier's limits.
    #[test]
    fn the_kernel_accepts_the_longest_rule_list() {
        if !root() {
            return;
        }
        use crate::cgroups::device_filter::MAX_RULES;
        // The worst case: every rule names a type, a major and a minor.
        let rules: Vec<DeviceRule> = (0..MAX_RULES + 16)
            .map(|i| DeviceRule {
                allow: i % 3 != 0,
                typ: [RuleType::Char, RuleType::Block][i % 2],
                major: Some((i % 300) as u32),
                minor: Some((i % 1000) as u32),
                access: (i % 7 + 1) as u32,
            })
            .collect();
        let fd = load(&compile(&rules)).unwrap();
        assert_eq!(prog_name(&fd).unwrap(), PROG_NAME);
    }

    /// A cgroup2 directory for a test, removed on drop.
    struct TestCgroup(std::path::PathBuf);

    impl Drop for TestCgroup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }

    /// `install` replaces only this runtime's program: a program someone
    /// else attached (another name) stays, and ours stays exactly one.
    #[test]
    fn install_replaces_only_our_program() {
        if !root() {
            return;
        }
        let paths = crate::cgroups::CgroupPaths::for_relative(&format!(
            "berth-bpf-unit-{}",
            std::process::id()
        ));
        let Some(dir) = paths.unified else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI host has no cgroup2 tree"
            );
            eprintln!("skipping: no cgroup2 tree");
            return;
        };
        std::fs::create_dir(&dir).unwrap();
        let _guard = TestCgroup(dir.clone());
        let allow_all = [DeviceRule {
            allow: true,
            typ: RuleType::All,
            major: None,
            minor: None,
            access: 7,
        }];
        let prog = compile(&allow_all);
        let first = install(&dir, &prog).unwrap();
        // Someone else's program, attached beside ours.
        let cg = open_cgroup(&dir).unwrap();
        let foreign = load_named(&prog, "other_devices").unwrap();
        attach_op(BPF_PROG_ATTACH, "attach", &cg, &foreign, BPF_F_ALLOW_MULTI).unwrap();
        let (foreign_id, _) = prog_info(&foreign).unwrap();

        let second = install(&dir, &prog).unwrap();
        assert_ne!(first, second);
        let mut ids: Vec<u32> = attached(&dir).unwrap().iter().map(|p| p.id).collect();
        ids.sort();
        let mut want = vec![foreign_id, second];
        want.sort();
        assert_eq!(ids, want);
        assert!(!is_loaded(first).unwrap(), "the replaced program is freed");
        let names: Vec<String> = attached(&dir)
            .unwrap()
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert!(names.contains(&"other_devices".to_string()), "{names:?}");
        assert!(names.contains(&PROG_NAME.to_string()), "{names:?}");
    }

    /// What counts as the kernel refusing device programs as such.
    #[test]
    fn refusals_are_told_from_other_failures() {
        let sys = |op, errno| BpfError::Syscall {
            op,
            source: io::Error::from_raw_os_error(errno),
        };
        let load = |errno, log: &str| BpfError::Load {
            source: io::Error::from_raw_os_error(errno),
            log: log.to_string(),
        };
        for errno in [libc::ENOSYS, libc::EINVAL, libc::EPERM] {
            assert!(load(errno, "").is_refusal(), "{errno}");
            assert!(sys("BPF_PROG_ATTACH", errno).is_refusal(), "{errno}");
            assert!(sys("BPF_PROG_QUERY", errno).is_refusal(), "{errno}");
            // Opening the directory is not bpf(2).
            assert!(!sys(OPEN_CGROUP, errno).is_refusal(), "{errno}");
        }
        // The verifier's rejections (with a log) are this crate's bugs.
        assert!(!load(libc::EINVAL, "0: (95) exit\nR0 !read_ok").is_refusal());
        assert!(!load(libc::EACCES, "").is_refusal());
        assert!(!load(libc::E2BIG, "").is_refusal());
        assert!(!sys("BPF_PROG_DETACH", libc::ENOENT).is_refusal());
        assert!(!sys(OPEN_CGROUP, libc::ENOENT).is_refusal());
        // Without a log, the message says nothing about one.
        let enosys = load(libc::ENOSYS, "").to_string();
        assert!(!enosys.contains("verifier"), "{enosys}");
        let rejected = load(libc::EACCES, "R0 !read_ok").to_string();
        assert!(
            rejected.ends_with("; verifier log: R0 !read_ok"),
            "{rejected}"
        );
    }

    /// A program the verifier refuses (no r0 before exit) comes back with
    /// the verifier's log in the error.
    #[test]
    fn a_refused_program_reports_the_verifier_log() {
        if !root() {
            return;
        }
        let exit_only = [Insn {
            code: 0x95,
            regs: 0,
            off: 0,
            imm: 0,
        }];
        let e = load(&exit_only).unwrap_err();
        match &e {
            BpfError::Load { log, .. } => assert!(log.contains("R0"), "log: {log}"),
            e => panic!("unexpected {e}"),
        }
        assert_eq!(e.errno(), Some(libc::EACCES), "{e}");
    }
}
