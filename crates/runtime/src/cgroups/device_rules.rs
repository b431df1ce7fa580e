//! The device rule list of a container's cgroup, and its form for the v1
//! devices controller.
//!
//! [`device_rules`] builds the list every cgroup gets (see the `cgroups`
//! module docs); [`write_v1_device_rules`] writes the validated list to a
//! v1 `devices` directory. The cgroup2 form is an eBPF program
//! ([`super::device_filter`]).

use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

/// Writes `rules` to the v1 devices controller directory `dir`, in order:
/// one `write(2)` per rule to `devices.allow` or `devices.deny` (each
/// opened once), in the kernel's `TYPE MAJOR:MINOR ACCESS` form with `*`
/// for any number. Consecutive duplicates are written once (the same rule
/// twice in a row changes nothing).
pub(super) fn write_v1_device_rules(
    dir: &Path,
    rules: &[super::device_filter::DeviceRule],
) -> std::io::Result<()> {
    use super::device_filter::{ACC_MKNOD, ACC_READ, ACC_WRITE, RuleType};
    use std::io::Write;
    let num = |n: Option<u32>| n.map_or_else(|| "*".to_string(), |n| n.to_string());
    let (mut allow, mut deny) = (None, None);
    let mut last = None;
    for rule in rules {
        if last == Some(rule) {
            continue;
        }
        last = Some(rule);
        let typ = match rule.typ {
            RuleType::All => 'a',
            RuleType::Char => 'c',
            RuleType::Block => 'b',
        };
        let access: String = [(ACC_READ, 'r'), (ACC_WRITE, 'w'), (ACC_MKNOD, 'm')]
            .iter()
            .filter(|(bit, _)| rule.access & bit != 0)
            .map(|(_, c)| c)
            .collect();
        let line = format!("{typ} {}:{} {access}", num(rule.major), num(rule.minor));
        let (file, name) = if rule.allow {
            (&mut allow, "devices.allow")
        } else {
            (&mut deny, "devices.deny")
        };
        let f = match file {
            Some(f) => f,
            None => file.insert(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(dir.join(name))?,
            ),
        };
        f.write_all(line.as_bytes()).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("writing {line:?} to {}: {e}", dir.display()),
            )
        })?;
    }
    Ok(())
}

/// The full device rule list of a cgroup: deny everything, then the
/// spec's rules in order, then the runtime's default allowances (last, so the
/// spec's own leading deny-all rule does not revoke them).
pub(super) fn device_rules(spec_rules: Option<&[LinuxDeviceCgroup]>) -> Vec<LinuxDeviceCgroup> {
    let mut deny_all = LinuxDeviceCgroup::default();
    deny_all.set_allow(false);
    deny_all.set_typ(Some(LinuxDeviceType::A));
    deny_all.set_major(Some(-1));
    deny_all.set_minor(Some(-1));
    deny_all.set_access(Some("rwm".to_string()));
    let mut rules = vec![deny_all];
    rules.extend(spec_rules.unwrap_or_default().iter().cloned());
    rules.extend(default_allowances());
    rules
}

/// Allow mknod of any node and use of the default devices.
fn default_allowances() -> Vec<LinuxDeviceCgroup> {
    let rule = |allow: bool, typ: LinuxDeviceType, major: i64, minor: i64, access: &str| {
        let mut r = LinuxDeviceCgroup::default();
        r.set_allow(allow);
        r.set_typ(Some(typ));
        r.set_major(Some(major));
        r.set_minor(Some(minor));
        r.set_access(Some(access.to_string()));
        r
    };
    use LinuxDeviceType::{B, C};
    vec![
        rule(true, C, -1, -1, "m"),
        rule(true, B, -1, -1, "m"),
        rule(true, C, 1, 3, "rwm"),
        rule(true, C, 1, 5, "rwm"),
        rule(true, C, 1, 7, "rwm"),
        rule(true, C, 1, 8, "rwm"),
        rule(true, C, 1, 9, "rwm"),
        rule(true, C, 5, 0, "rwm"),
        rule(true, C, 5, 2, "rwm"),
        rule(true, C, 136, -1, "rwm"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::device_filter::{DeviceRule, RuleType};

    #[test]
    fn device_allowances_follow_the_spec_rules() {
        let mut spec_deny = LinuxDeviceCgroup::default();
        spec_deny.set_allow(false);
        spec_deny.set_access(Some("rwm".into()));
        let rules = device_rules(Some(std::slice::from_ref(&spec_deny)));
        assert!(!rules[0].allow());
        assert_eq!(rules[0].typ(), Some(LinuxDeviceType::A));
        assert_eq!(rules[1], spec_deny);
        let defaults = default_allowances();
        assert_eq!(rules[2..], defaults[..]);
        // /dev/null (c 1:3) is among the allowances, after the spec's deny-all.
        assert!(defaults.iter().any(|r| r.allow()
            && r.typ() == Some(LinuxDeviceType::C)
            && r.major() == Some(1)
            && r.minor() == Some(3)));
        assert_eq!(device_rules(None).len(), 1 + defaults.len());
    }

    /// The v1 form: one line per rule to the matching file, `*` for any
    /// number, consecutive duplicates once.
    #[test]
    fn v1_lines_go_to_allow_and_deny() {
        let dir = tempfile::tempdir().unwrap();
        // Regular files: each write appends at the file offset, like the
        // kernel's per-write rule parsing sees them one by one.
        std::fs::write(dir.path().join("devices.allow"), "").unwrap();
        std::fs::write(dir.path().join("devices.deny"), "").unwrap();
        let rule = |allow, typ, major, minor, access| DeviceRule {
            allow,
            typ,
            major,
            minor,
            access,
        };
        let deny_all = rule(false, RuleType::All, None, None, 7);
        let rules = [
            deny_all,
            deny_all,
            rule(true, RuleType::Char, Some(1), Some(3), 6),
            rule(true, RuleType::Block, None, Some(0), 1),
            rule(false, RuleType::Char, Some(136), None, 4),
        ];
        write_v1_device_rules(dir.path(), &rules).unwrap();
        let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
        assert_eq!(read("devices.deny"), "a *:* rwmc 136:* w");
        assert_eq!(read("devices.allow"), "c 1:3 rwb *:0 m");
    }
}
