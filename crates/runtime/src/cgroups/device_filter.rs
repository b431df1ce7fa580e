//! Device rules compiled to a cgroup v2 device program (`BPF_PROG_TYPE_CGROUP_DEVICE`).
//!
//! cgroup v2 has no `devices.allow`/`devices.deny` files: the kernel asks the
//! eBPF programs attached to the task's cgroup (type `BPF_CGROUP_DEVICE`)
//! whether an access to a device node is allowed. This module turns a list
//! of OCI device rules (`linux.resources.devices`) into such a program; the
//! system calls that load and attach it live in [`super::bpf`].
//!
//! # Semantics
//! The rules are evaluated in order and **the last matching rule wins**, per
//! access bit: a request (one device, some of `r`ead, `w`rite, `m`knod) is
//! allowed when, for every access it asks for, the last rule that matches
//! the device and names that access is an allow rule. A request no rule
//! decides is denied (the runtime always starts the list with a deny-all
//! rule anyway). A rule matches a device when its type is `a` (any) or the
//! device's (`c`/`b`), and its major and minor are `-1`/absent (any) or
//! equal. Absent access means `rwm`; an empty access string names nothing,
//! so the rule never matches.
//!
//! Deciding per access bit (rather than runc's "the rule must cover the
//! whole request") matters for deny rules: with `allow c 1:3 rwm` followed
//! by `deny c 1:3 w`, an `O_RDWR` open asks for `rw` at once and must be
//! refused, since the write part is denied.
//!
//! # The program
//! The context is `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major;
//! u32 minor; }` with the device type in the low 16 bits of `access_type`
//! and the requested access bits in the high 16. The program keeps the
//! context pointer in r6 and the still undecided ("pending") access bits in
//! r3, then has one block per rule, **last rule first**:
//!
//! ```text
//!   r6 = r1; w3 = ctx->access_type >> 16
//! block (one per rule):
//!   w2 = ctx->access_type & 0xffff; if r2 != TYPE goto next  ; unless type `a`
//!   w4 = ctx->major; if r4 != MAJOR goto next                 ; unless any major
//!   w5 = ctx->minor; if r5 != MINOR goto next                 ; unless any minor
//! deny rule:                      | allow rule:
//!   if r3 & ACCESS goto +1        |   w3 &= ~ACCESS   ; these bits are decided
//!   goto next                     |   if r3 != 0 goto next
//!   r0 = 0; exit                  |   r0 = 1; exit
//! next:
//! ...
//!   r0 = 0; exit                  ; nothing decided the rest: deny
//! ```
//!
//! Walking the rules backwards, the first rule met that names a pending
//! access bit is the last rule of the list for that bit, so it decides it:
//! a deny rule refuses the request, an allow rule clears the bits it grants,
//! and once no bit is pending the request is allowed. Every jump is forward
//! and local to its block, so the program has no loops and any length fits
//! the 16-bit jump offsets.
//!
//! Each block reloads the field it compares instead of keeping type, major
//! and minor in registers for the whole program: after `if r4 != 8` falls
//! through, the verifier knows `r4 == 8` on that path, and a register that
//! stayed live would make every such path a distinct state to explore down
//! to the end (quadratic in the number of rules: a few thousand rules
//! exceeded the verifier's budget of a million instructions). Reloaded
//! registers are dead between blocks, so paths merge again at each block.

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use crate::error::{Error, Result};

/// `BPF_DEVCG_ACC_MKNOD`: the `m` access bit of the context.
pub const ACC_MKNOD: u32 = 1;
/// `BPF_DEVCG_ACC_READ`: the `r` access bit.
pub const ACC_READ: u32 = 2;
/// `BPF_DEVCG_ACC_WRITE`: the `w` access bit.
pub const ACC_WRITE: u32 = 4;
const ACC_ALL: u32 = ACC_MKNOD | ACC_READ | ACC_WRITE;
/// `BPF_DEVCG_DEV_BLOCK`: a block device in the context's type field.
pub const DEV_BLOCK: u32 = 1;
/// `BPF_DEVCG_DEV_CHAR`: a character device in the context's type field.
pub const DEV_CHAR: u32 = 2;

/// More rules than this are refused. The verifier follows one path of the
/// program to its end before it looks at the branches it set aside, and
/// gives up beyond 8192 of those; a rule sets aside up to four (type,
/// major, minor, access). Real rule lists hold tens of rules.
pub const MAX_RULES: usize = 1024;

/// One eBPF instruction, laid out as the kernel's `struct bpf_insn`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode (class | operation | source).
    pub code: u8,
    /// Destination register in the low nibble, source register in the high one.
    pub regs: u8,
    /// Signed jump or memory offset.
    pub off: i16,
    /// Signed immediate.
    pub imm: i32,
}

// The opcodes this emitter uses (linux/bpf_common.h, linux/bpf.h).
const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU32_AND_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const ALU32_RSH_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const ALU64_MOV_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const ALU64_MOV_X: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
const JMP_JA: u8 = 0x05; // BPF_JMP | BPF_JA
const JMP_JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JMP_JSET_K: u8 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const JMP_EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;
const R6: u8 = 6;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | (dst & 0x0f),
        off,
        imm,
    }
}

/// The device types a rule can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleType {
    /// `a`: character and block devices.
    All,
    /// `c`: character devices.
    Char,
    /// `b`: block devices.
    Block,
}

/// A validated device rule, ready to compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    /// Allow (true) or deny (false) the access.
    pub allow: bool,
    /// The device type it concerns.
    pub typ: RuleType,
    /// The major number, `None` for any.
    pub major: Option<u32>,
    /// The minor number, `None` for any.
    pub minor: Option<u32>,
    /// The access bits ([`ACC_READ`], [`ACC_WRITE`], [`ACC_MKNOD`]) it names.
    pub access: u32,
}

impl DeviceRule {
    /// Validates an OCI rule. `field` names it in errors.
    ///
    /// Errors: [`Error::InvalidSpec`] for a type `u`/`p` (not device cgroup
    /// types), a negative number other than `-1`, a number above
    /// `i32::MAX`, or an access letter other than `r`, `w`, `m`.
    pub fn from_oci(rule: &LinuxDeviceCgroup, field: &str) -> Result<DeviceRule> {
        let typ = match rule.typ() {
            None | Some(LinuxDeviceType::A) => RuleType::All,
            Some(LinuxDeviceType::C) => RuleType::Char,
            Some(LinuxDeviceType::B) => RuleType::Block,
            Some(t) => {
                return Err(Error::spec(
                    field,
                    format!("type {t:?} is not a device cgroup type (a, c, b)"),
                ));
            }
        };
        let number = |n: Option<i64>, what: &str| -> Result<Option<u32>> {
            match n {
                None | Some(-1) => Ok(None),
                Some(n) => u32::try_from(n)
                    .ok()
                    .filter(|n| i32::try_from(*n).is_ok())
                    .map(Some)
                    .ok_or_else(|| Error::spec(field, format!("{what} {n} out of range"))),
            }
        };
        let access = match rule.access().as_deref() {
            None => ACC_ALL,
            Some(s) => {
                let mut bits = 0;
                for c in s.chars() {
                    bits |= match c {
                        'r' => ACC_READ,
                        'w' => ACC_WRITE,
                        'm' => ACC_MKNOD,
                        c => {
                            return Err(Error::spec(
                                field,
                                format!("access {s:?}: unknown letter {c:?}"),
                            ));
                        }
                    };
                }
                bits
            }
        };
        Ok(DeviceRule {
            allow: rule.allow(),
            typ,
            major: number(rule.major(), "major")?,
            minor: number(rule.minor(), "minor")?,
            access,
        })
    }

    /// Whether the rule matches a device of `dev_type` ([`DEV_CHAR`] or
    /// [`DEV_BLOCK`]) and numbers `major:minor` (access aside).
    pub fn matches_device(&self, dev_type: u32, major: u32, minor: u32) -> bool {
        let typ = match self.typ {
            RuleType::All => true,
            RuleType::Char => dev_type == DEV_CHAR,
            RuleType::Block => dev_type == DEV_BLOCK,
        };
        typ && self.major.is_none_or(|m| m == major) && self.minor.is_none_or(|m| m == minor)
    }
}

/// Validates a list of OCI rules (`linux.resources.devices`).
///
/// Errors: as [`DeviceRule::from_oci`]; [`Error::InvalidSpec`] for more than
/// [`MAX_RULES`] rules.
pub fn rules_from_oci(rules: &[LinuxDeviceCgroup]) -> Result<Vec<DeviceRule>> {
    if rules.len() > MAX_RULES {
        return Err(Error::spec(
            "linux.resources.devices",
            format!("{} rules, at most {MAX_RULES} are supported", rules.len()),
        ));
    }
    rules
        .iter()
        .enumerate()
        .map(|(i, r)| DeviceRule::from_oci(r, &format!("linux.resources.devices[{i}]")))
        .collect()
}

/// The decision the rules take for one request, evaluated directly (the
/// reference the emitted program is tested against): allowed when every
/// requested access bit is allowed by the last rule matching the device
/// and naming that bit. A request of no access is denied.
pub fn evaluate(rules: &[DeviceRule], dev_type: u32, major: u32, minor: u32, access: u32) -> bool {
    if access == 0 {
        return false;
    }
    (0..3)
        .map(|b| 1u32 << b)
        .filter(|b| access & b != 0)
        .all(|bit| {
            rules
                .iter()
                .rev()
                .find(|r| r.access & bit != 0 && r.matches_device(dev_type, major, minor))
                .is_some_and(|r| r.allow)
        })
}

/// Compiles `rules` into a `BPF_PROG_TYPE_CGROUP_DEVICE` program with the
/// semantics of [`evaluate`] (see the module docs for its shape).
///
/// Never fails: [`DeviceRule`]s are valid by construction; at most
/// [`MAX_RULES`] of them come from [`rules_from_oci`], though longer lists
/// compile as well.
pub fn compile(rules: &[DeviceRule]) -> Vec<Insn> {
    let mut p = vec![
        insn(ALU64_MOV_X, R6, R1, 0, 0),
        insn(LDX_MEM_W, R3, R6, 0, 0),
        insn(ALU32_RSH_K, R3, 0, 0, 16),
    ];
    for rule in rules.iter().rev() {
        // A rule naming no access never decides anything.
        if rule.access == 0 {
            continue;
        }
        let mut block: Vec<Insn> = Vec::with_capacity(12);
        // Indexes of the "goto next" jumps, patched once the block is complete.
        let mut to_next: Vec<usize> = Vec::with_capacity(4);
        let mut cond = |block: &mut Vec<Insn>, load: &[Insn], reg: u8, value: i32| {
            block.extend_from_slice(load);
            to_next.push(block.len());
            block.push(insn(JMP_JNE_K, reg, 0, 0, value));
        };
        match rule.typ {
            RuleType::All => {}
            RuleType::Char | RuleType::Block => {
                let t = if rule.typ == RuleType::Char {
                    DEV_CHAR
                } else {
                    DEV_BLOCK
                };
                let load = [
                    insn(LDX_MEM_W, R2, R6, 0, 0),
                    insn(ALU32_AND_K, R2, 0, 0, 0xffff),
                ];
                cond(&mut block, &load, R2, t as i32);
            }
        }
        // Numbers are at most i32::MAX (checked in from_oci), so the 64-bit
        // comparison against the zero-extended 32-bit loads is exact.
        if let Some(m) = rule.major {
            cond(&mut block, &[insn(LDX_MEM_W, R4, R6, 4, 0)], R4, m as i32);
        }
        if let Some(m) = rule.minor {
            cond(&mut block, &[insn(LDX_MEM_W, R5, R6, 8, 0)], R5, m as i32);
        }
        let access = rule.access as i32;
        if rule.allow {
            block.push(insn(ALU32_AND_K, R3, 0, 0, !access));
            to_next.push(block.len());
            block.push(insn(JMP_JNE_K, R3, 0, 0, 0));
            block.push(insn(ALU64_MOV_K, R0, 0, 0, 1));
            block.push(insn(JMP_EXIT, 0, 0, 0, 0));
        } else {
            block.push(insn(JMP_JSET_K, R3, 0, 1, access));
            to_next.push(block.len());
            block.push(insn(JMP_JA, 0, 0, 0, 0));
            block.push(insn(ALU64_MOV_K, R0, 0, 0, 0));
            block.push(insn(JMP_EXIT, 0, 0, 0, 0));
        }
        let len = block.len();
        for at in to_next {
            // From the instruction after the jump to the end of the block
            // (at most 12 instructions: the offset fits).
            block[at].off = (len - at - 1) as i16;
        }
        p.extend(block);
    }
    p.push(insn(ALU64_MOV_K, R0, 0, 0, 0));
    p.push(insn(JMP_EXIT, 0, 0, 0, 0));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny interpreter of exactly the instructions [`compile`] emits,
    /// checking what the kernel's verifier would: jumps forward and inside
    /// the program, loads only from the context pointer within its 12
    /// bytes, no register read before it is written, r0 set at exit.
    fn run(prog: &[Insn], dev_type: u32, access: u32, major: u32, minor: u32) -> u64 {
        let ctx = [dev_type | (access << 16), major, minor];
        let mut r = [0u64; 11];
        // Which registers are written, and which hold the context pointer (r1 on entry).
        let mut init = [false; 11];
        let mut is_ctx = [false; 11];
        (init[1], is_ctx[1]) = (true, true);
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            let (dst, src) = ((i.regs & 0x0f) as usize, (i.regs >> 4) as usize);
            let imm64 = i.imm as i64 as u64;
            let read = |reg: usize| {
                assert!(init[reg], "r{reg} read before written at {pc}");
                assert!(!is_ctx[reg] || i.code == LDX_MEM_W || i.code == ALU64_MOV_X);
                r[reg]
            };
            let jump = |off: i16| {
                assert!(off >= 0, "backward jump at {pc}");
                let t = pc + 1 + off as usize;
                assert!(t < prog.len(), "jump out of the program at {pc}");
                t
            };
            let mut next = pc + 1;
            let mut write = None;
            match i.code {
                ALU64_MOV_X => {
                    let v = read(src);
                    write = Some(v);
                    is_ctx[dst] = is_ctx[src];
                }
                LDX_MEM_W => {
                    assert!(is_ctx[src], "load not from the context at {pc}");
                    assert!(i.off >= 0 && i.off % 4 == 0 && i.off < 12, "ctx offset");
                    write = Some(u64::from(ctx[(i.off / 4) as usize]));
                }
                ALU32_AND_K => write = Some(u64::from((read(dst) as u32) & (i.imm as u32))),
                ALU32_RSH_K => write = Some(u64::from((read(dst) as u32) >> i.imm)),
                ALU64_MOV_K => write = Some(imm64),
                JMP_JA => next = jump(i.off),
                JMP_JNE_K => {
                    let t = jump(i.off);
                    if read(dst) != imm64 {
                        next = t;
                    }
                }
                JMP_JSET_K => {
                    let t = jump(i.off);
                    if read(dst) & imm64 != 0 {
                        next = t;
                    }
                }
                JMP_EXIT => return read(0),
                c => panic!("unexpected opcode {c:#x} at {pc}"),
            }
            if let Some(v) = write {
                assert!(dst < 10, "write to r{dst}");
                if i.code != ALU64_MOV_X {
                    is_ctx[dst] = false;
                }
                r[dst] = v;
                init[dst] = true;
            }
            pc = next;
            assert!(pc < prog.len(), "fell off the program");
        }
    }

    fn rule(allow: bool, typ: RuleType, major: i64, minor: i64, access: &str) -> DeviceRule {
        DeviceRule {
            allow,
            typ,
            major: u32::try_from(major).ok(),
            minor: u32::try_from(minor).ok(),
            access: access
                .chars()
                .map(|c| match c {
                    'r' => ACC_READ,
                    'w' => ACC_WRITE,
                    _ => ACC_MKNOD,
                })
                .fold(0, |a, b| a | b),
        }
    }

    const R: u32 = ACC_READ;
    const W: u32 = ACC_WRITE;
    const M: u32 = ACC_MKNOD;

    #[test]
    fn instruction_layout_matches_struct_bpf_insn() {
        assert_eq!(size_of::<Insn>(), 8);
        let i = insn(LDX_MEM_W, R3, R1, 4, 0);
        assert_eq!(i.regs, 0x13, "dst in the low nibble, src in the high one");
    }

    #[test]
    fn last_matching_rule_wins_table() {
        use RuleType::*;
        // The runtime's usual shape: deny all, then allowances.
        let rules = [
            rule(false, All, -1, -1, "rwm"),
            rule(true, Char, -1, -1, "m"),
            rule(true, Block, -1, -1, "m"),
            rule(true, Char, 1, 3, "rwm"),
            rule(true, Char, 136, -1, "rwm"),
            rule(true, Char, 10, 200, "rw"),
            rule(false, Char, 10, 200, "w"),
        ];
        let prog = compile(&rules);
        let cases: &[(u32, u32, u32, u32, bool)] = &[
            (DEV_CHAR, 1, 3, R | W, true),     // /dev/null
            (DEV_CHAR, 1, 3, M, true),         // mknod of anything char
            (DEV_BLOCK, 8, 0, M, true),        // mknod of a block device
            (DEV_BLOCK, 8, 0, R, false),       // but no reading it
            (DEV_BLOCK, 1, 3, R, false),       // same numbers, other type
            (DEV_CHAR, 1, 1, R, false),        // /dev/mem
            (DEV_CHAR, 136, 7, R | W, true),   // a pts, minor wildcard
            (DEV_CHAR, 137, 7, R, false),      // not a pts
            (DEV_CHAR, 10, 200, R, true),      // tun: read allowed
            (DEV_CHAR, 10, 200, W, false),     // write denied by the later rule
            (DEV_CHAR, 10, 200, R | W, false), // O_RDWR: the write part is denied
            (DEV_CHAR, 10, 200, M, true),      // mknod still from `c *:* m`
            (DEV_CHAR, 10, 201, R, false),
        ];
        for &(t, maj, min, acc, want) in cases {
            let got = run(&prog, t, acc, maj, min);
            assert_eq!(got, u64::from(want), "type {t} {maj}:{min} access {acc}");
            assert_eq!(evaluate(&rules, t, maj, min, acc), want, "reference");
        }
    }

    #[test]
    fn empty_rules_and_empty_access_deny() {
        let prog = compile(&[]);
        assert_eq!(run(&prog, DEV_CHAR, R, 1, 3), 0);
        let never = rule(true, RuleType::All, -1, -1, "");
        let prog = compile(&[never]);
        assert_eq!(run(&prog, DEV_CHAR, R, 1, 3), 0);
        assert_eq!(
            prog.len(),
            compile(&[]).len(),
            "an access-less rule emits nothing"
        );
        let all = rule(true, RuleType::All, -1, -1, "rwm");
        let prog = compile(&[all]);
        assert_eq!(run(&prog, DEV_BLOCK, R | W | M, 259, 1), 1);
    }

    #[test]
    fn a_later_allow_overrides_an_earlier_deny_per_access() {
        use RuleType::*;
        let rules = [
            rule(true, All, -1, -1, "rwm"),
            rule(false, Char, 5, -1, "rw"),
            rule(true, Char, 5, 1, "r"),
        ];
        let prog = compile(&rules);
        assert_eq!(run(&prog, DEV_CHAR, R, 5, 1), 1);
        assert_eq!(run(&prog, DEV_CHAR, W, 5, 1), 0);
        assert_eq!(run(&prog, DEV_CHAR, R, 5, 2), 0);
        assert_eq!(run(&prog, DEV_CHAR, M, 5, 2), 1, "m was never denied");
        assert_eq!(run(&prog, DEV_BLOCK, R | W, 5, 2), 1);
    }

    /// Random rule lists against the reference evaluation, over every
    /// request on a small grid of devices.
    #[test]
    fn emitted_program_agrees_with_the_reference_on_random_rules() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..300 {
            let len = next(9) as usize;
            let rules: Vec<DeviceRule> = (0..len)
                .map(|_| DeviceRule {
                    allow: next(2) == 0,
                    typ: [RuleType::All, RuleType::Char, RuleType::Block][next(3) as usize],
                    major: [None, Some(1), Some(2)][next(3) as usize],
                    minor: [None, Some(0), Some(3)][next(3) as usize],
                    access: next(8) as u32,
                })
                .collect();
            let prog = compile(&rules);
            for t in [DEV_CHAR, DEV_BLOCK] {
                for maj in 0..3 {
                    for min in [0, 3, 4] {
                        for acc in 1..8 {
                            assert_eq!(
                                run(&prog, t, acc, maj, min) == 1,
                                evaluate(&rules, t, maj, min, acc),
                                "{rules:?} type {t} {maj}:{min} access {acc}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn oci_rules_are_validated() {
        let mut r = LinuxDeviceCgroup::default();
        r.set_allow(true);
        let d = DeviceRule::from_oci(&r, "x").unwrap();
        assert_eq!(
            (d.typ, d.major, d.minor, d.access),
            (RuleType::All, None, None, ACC_ALL),
            "absent fields mean any device, every access"
        );
        r.set_typ(Some(LinuxDeviceType::C));
        r.set_major(Some(1));
        r.set_minor(Some(-1));
        r.set_access(Some("rm".into()));
        let d = DeviceRule::from_oci(&r, "x").unwrap();
        assert_eq!(
            (d.typ, d.major, d.minor, d.access),
            (RuleType::Char, Some(1), None, ACC_READ | ACC_MKNOD)
        );
        r.set_access(Some("rx".into()));
        assert_eq!(
            DeviceRule::from_oci(&r, "x").unwrap_err().kind(),
            crate::ErrorKind::InvalidArgument
        );
        r.set_access(None);
        r.set_major(Some(-2));
        assert!(DeviceRule::from_oci(&r, "x").is_err());
        r.set_major(Some(1 << 40));
        assert!(DeviceRule::from_oci(&r, "x").is_err());
        r.set_major(Some(1));
        r.set_typ(Some(LinuxDeviceType::P));
        assert!(DeviceRule::from_oci(&r, "x").is_err());
        let many = vec![LinuxDeviceCgroup::default(); MAX_RULES + 1];
        assert!(rules_from_oci(&many).is_err());
    }
}
