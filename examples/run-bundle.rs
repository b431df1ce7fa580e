//! `run-bundle`: the smallest front end of the runtime library — runs an OCI bundle to
//! completion, like `runc run` without a terminal, and exits with the container's status.
//!
//! ```text
//! run-bundle [--root DIR] [--id ID] [--repeat N] BUNDLE
//! ```
//!
//! Each round is `create` (stdio inherited) + `start` + wait + `delete` through
//! [`berth::runtime::Runtime`]; `--repeat` runs the same bundle N times one after another
//! (ids `ID-0`, `ID-1`, …), stopping at the first failure. The state root defaults to
//! `/run/berth`. It links nothing but the runtime and std, so it also shows what the library
//! costs a process that embeds it: `benches/compare-lifecycle.sh` measures its peak RSS
//! against `crun create`.

use std::path::PathBuf;
use std::process::ExitCode;

use berth::runtime::{CreateOptions, Runtime};

struct Args {
    root: PathBuf,
    id: String,
    repeat: usize,
    bundle: PathBuf,
}

const USAGE: &str = "usage: run-bundle [--root DIR] [--id ID] [--repeat N] BUNDLE";

fn parse() -> Result<Args, String> {
    let mut root = PathBuf::from("/run/berth");
    let mut id = format!("run-bundle-{}", std::process::id());
    let mut repeat = 1usize;
    let mut bundle = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value\n{USAGE}"));
        match a.as_str() {
            "--root" => root = PathBuf::from(value("--root")?),
            "--id" => id = value("--id")?,
            "--repeat" => {
                repeat = value("--repeat")?
                    .parse()
                    .map_err(|e| format!("--repeat: {e}"))?;
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            s if s.starts_with('-') => return Err(format!("unknown option {s}\n{USAGE}")),
            s if bundle.is_none() => bundle = Some(PathBuf::from(s)),
            s => return Err(format!("unexpected argument {s}\n{USAGE}")),
        }
    }
    let bundle = bundle.ok_or_else(|| USAGE.to_owned())?;
    Ok(Args {
        root,
        id,
        repeat,
        bundle,
    })
}

/// Runs one container to completion; returns its exit code (128 + signal when killed).
fn run_once(rt: &Runtime, id: &str, bundle: &std::path::Path) -> Result<i32, String> {
    let init = rt
        .create(id, bundle, CreateOptions::default())
        .map_err(|e| format!("create {id}: {e}"))?;
    let started = rt.start(id).map_err(|e| format!("start {id}: {e}"));
    let status = match started {
        Ok(()) => init.wait().map_err(|e| format!("wait {id}: {e}")),
        Err(e) => Err(e),
    };
    // Delete even after a failed start, so nothing is left behind.
    let deleted = rt
        .delete(id, status.is_err())
        .map_err(|e| format!("delete {id}: {e}"));
    let status = status?;
    deleted?;
    Ok(status.code())
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let rt = match Runtime::new(&args.root) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("run-bundle: state root {}: {e}", args.root.display());
            return ExitCode::from(125);
        }
    };
    let mut code = 0;
    for round in 0..args.repeat {
        let id = if args.repeat == 1 {
            args.id.clone()
        } else {
            format!("{}-{round}", args.id)
        };
        match run_once(&rt, &id, &args.bundle) {
            Ok(c) => code = c,
            Err(e) => {
                eprintln!("run-bundle: {e}");
                return ExitCode::from(125);
            }
        }
    }
    ExitCode::from(u8::try_from(code).unwrap_or(255))
}
