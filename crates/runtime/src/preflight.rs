//! Pre-flight checks of a spec before anything is created.
//!
//! **Spec validation call site.** [`validate`] is the single place where
//! the runtime validates a spec: it runs the suite's general validator
//! (`berth_oci::validate`, every problem at once) and then the checks of
//! what this runtime implements. The plan builders (`NsPlan`, `RootfsPlan`,
//! `ProcessPlan`) reject the rest with precise field names.

use oci_spec::runtime::Spec;

use crate::error::{Error, Result};

/// Validates `spec` for this runtime.
///
/// Errors: [`Error::InvalidSpec`] for a missing process, root or linux
/// section, a non-semver `ociVersion`, or relative hook paths;
/// [`Error::Unsupported`] for features this runtime does not implement.
pub fn validate(spec: &Spec) -> Result<()> {
    berth_oci::validate(spec).map_err(|e| Error::spec("config.json", e.to_string()))?;
    let v = spec.version();
    let mut parts = v.split(['.', '-', '+']);
    let semver_ok = (0..3).all(|_| parts.next().is_some_and(|p| p.parse::<u64>().is_ok()));
    if !semver_ok || !v.starts_with('1') {
        return Err(Error::spec(
            "ociVersion",
            format!("{v:?} is not a 1.x semantic version"),
        ));
    }
    if spec.root().is_none() {
        return Err(Error::spec("root", "missing"));
    }
    let Some(process) = spec.process() else {
        return Err(Error::spec("process", "missing"));
    };
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(Error::spec("process.args", "must name a program"));
    }
    if spec.linux().is_none() {
        return Err(Error::spec(
            "linux",
            "missing: only Linux containers are supported",
        ));
    }
    let unsupported = |feature: &str| {
        Err(Error::Unsupported {
            feature: feature.into(),
            reason: "not implemented by berth-runtime".into(),
        })
    };
    if process.exec_cpu_affinity().is_some() {
        return unsupported("process.execCPUAffinity");
    }
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        if m.uid_mappings().is_some() || m.gid_mappings().is_some() {
            return unsupported(&format!("mounts[{i}].uidMappings (id-mapped mounts)"));
        }
    }
    if let Some(h) = spec.hooks() {
        let lists = [
            ("hooks.prestart", h.prestart()),
            ("hooks.createRuntime", h.create_runtime()),
            ("hooks.createContainer", h.create_container()),
            ("hooks.startContainer", h.start_container()),
            ("hooks.poststart", h.poststart()),
            ("hooks.poststop", h.poststop()),
        ];
        for (field, list) in lists {
            for hook in list.iter().flatten() {
                if !hook.path().is_absolute() {
                    return Err(Error::spec(
                        field,
                        format!("{} is not absolute", hook.path().display()),
                    ));
                }
            }
        }
    }
    if let Some(linux) = spec.linux() {
        if linux.intel_rdt().is_some() {
            return Err(Error::Unsupported {
                feature: "linux.intelRdt".into(),
                reason: "not implemented".into(),
            });
        }
        if linux.memory_policy().is_some() {
            return unsupported("linux.memoryPolicy");
        }
        if linux.net_devices().as_ref().is_some_and(|d| !d.is_empty()) {
            return Err(Error::Unsupported {
                feature: "linux.netDevices".into(),
                reason: "not implemented".into(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxBuilder, ProcessBuilder, RootBuilder, SpecBuilder};

    fn base() -> SpecBuilder {
        SpecBuilder::default()
            .version("1.2.0")
            .root(RootBuilder::default().path("rootfs").build().unwrap())
            .process(
                ProcessBuilder::default()
                    .args(vec!["/bin/true".to_string()])
                    .cwd("/")
                    .build()
                    .unwrap(),
            )
            .linux(LinuxBuilder::default().build().unwrap())
    }

    #[test]
    fn accepts_minimal_and_rejects_bad_versions() {
        validate(&base().build().unwrap()).unwrap();
        for v in ["", "x", "2.0.0", "1.0"] {
            let e = validate(&base().version(v).build().unwrap()).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument, "{v}");
        }
    }

    #[test]
    fn unimplemented_features_are_unavailable_not_ignored() {
        use oci_spec::runtime::{ExecCPUAffinityBuilder, LinuxIntelRdtBuilder};
        let mut spec = base().build().unwrap();
        let mut p = spec.process().clone().unwrap();
        p.set_exec_cpu_affinity(Some(
            ExecCPUAffinityBuilder::default()
                .initial("0")
                .build()
                .unwrap(),
        ));
        spec.set_process(Some(p));
        let e = validate(&spec).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Unavailable, "{e}");
        assert!(e.to_string().contains("execCPUAffinity"), "{e}");

        let mut spec = base().build().unwrap();
        let mut l = spec.linux().clone().unwrap();
        l.set_intel_rdt(Some(LinuxIntelRdtBuilder::default().build().unwrap()));
        spec.set_linux(Some(l));
        assert_eq!(
            validate(&spec).unwrap_err().kind(),
            crate::ErrorKind::Unavailable
        );
    }
}
