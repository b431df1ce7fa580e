//! `commit --change`: Dockerfile instructions applied to a committed image's config, as
//! `docker commit -c` applies them.
//!
//! Supported: `CMD`, `ENTRYPOINT` (JSON array, or shell form run by `/bin/sh -c`), `ENV`
//! (`K=V …`, or the legacy `K V`), `WORKDIR`, `USER`, `LABEL K=V …`, `EXPOSE PORT[/PROTO] …`,
//! `VOLUME` (JSON array or paths). Values may be double-quoted (`ENV A="x y"`). Other
//! instructions are refused: they build, and a commit does not build.

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value, json};

/// One parsed change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `CMD`: the image's Cmd.
    Cmd(Vec<String>),
    /// `ENTRYPOINT`: the image's Entrypoint.
    Entrypoint(Vec<String>),
    /// `ENV`: variables set (replacing earlier values of the same names).
    Env(Vec<(String, String)>),
    /// `WORKDIR`.
    WorkingDir(String),
    /// `USER`.
    User(String),
    /// `LABEL`.
    Labels(Vec<(String, String)>),
    /// `EXPOSE`: ports with their protocol (`80/tcp`).
    Expose(Vec<String>),
    /// `VOLUME`.
    Volumes(Vec<String>),
}

/// Splits `s` into words at whitespace; double quotes group (and are removed), a backslash
/// escapes the next character inside them.
fn words(s: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' if quoted => cur.push(chars.next().context("a trailing backslash")?),
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quoted {
        bail!("an unterminated quote in {s:?}");
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// A JSON array of strings (exec form), or the shell form run by `/bin/sh -c`.
fn command(args: &str) -> Result<Vec<String>> {
    if args.starts_with('[') {
        return serde_json::from_str(args).with_context(|| format!("{args:?}: a JSON array"));
    }
    Ok(vec!["/bin/sh".into(), "-c".into(), args.to_owned()])
}

/// `K=V …` pairs; with `legacy`, a single `K V…` is accepted too (ENV's old form).
fn pairs(args: &str, legacy: bool) -> Result<Vec<(String, String)>> {
    let ws = words(args)?;
    if legacy
        && let Some((k, rest)) = ws.split_first()
        && !k.contains('=')
        && !rest.is_empty()
    {
        return Ok(vec![(k.clone(), rest.join(" "))]);
    }
    ws.iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => bail!("{w:?}: expected KEY=VALUE"),
        })
        .collect()
}

fn one(instruction: &str, args: &str) -> Result<String> {
    match words(args)?.as_slice() {
        [w] => Ok(w.clone()),
        _ => bail!("{instruction} takes one value, got {args:?}"),
    }
}

/// Parses one change (`INSTRUCTION ARGS`).
///
/// # Errors
/// An unknown or unsupported instruction, a missing value, or malformed arguments.
pub fn parse(line: &str) -> Result<Change> {
    let line = line.trim();
    let (instruction, args) = line
        .split_once(char::is_whitespace)
        .map_or((line, ""), |(i, a)| (i, a.trim()));
    if args.is_empty() {
        bail!("change {line:?}: no value");
    }
    let change = match instruction.to_ascii_uppercase().as_str() {
        "CMD" => Change::Cmd(command(args)?),
        "ENTRYPOINT" => Change::Entrypoint(command(args)?),
        "ENV" => Change::Env(pairs(args, true)?),
        "WORKDIR" => Change::WorkingDir(one("WORKDIR", args)?),
        "USER" => Change::User(one("USER", args)?),
        "LABEL" => Change::Labels(pairs(args, false)?),
        "EXPOSE" => Change::Expose(
            words(args)?
                .into_iter()
                .map(|p| {
                    if p.contains('/') {
                        p
                    } else {
                        format!("{p}/tcp")
                    }
                })
                .collect(),
        ),
        "VOLUME" if args.starts_with('[') => Change::Volumes(
            serde_json::from_str(args).with_context(|| format!("{args:?}: a JSON array"))?,
        ),
        "VOLUME" => Change::Volumes(words(args)?),
        other => bail!(
            "change {line:?}: {other} is not supported by commit (CMD, ENTRYPOINT, ENV, \
             WORKDIR, USER, LABEL, EXPOSE, VOLUME)"
        ),
    };
    Ok(change)
}

/// The object at `config[key]`, made one if absent or null.
fn object<'a>(config: &'a mut Map<String, Value>, key: &str) -> Result<&'a mut Map<String, Value>> {
    let v = config.entry(key).or_insert_with(|| json!({}));
    if v.is_null() {
        *v = json!({});
    }
    v.as_object_mut()
        .with_context(|| format!("the image config's {key} is not an object"))
}

/// Applies `changes`, in order, to an image config document (its `config` object, created
/// if absent). As in a Dockerfile, an `ENTRYPOINT` drops the inherited Cmd unless the changes
/// set one.
///
/// # Errors
/// A config whose `config`, `Env`, `Labels`, `ExposedPorts` or `Volumes` has the wrong type.
pub fn apply_all(image_config: &mut Value, changes: &[Change]) -> Result<()> {
    let cmd_set = changes.iter().any(|c| matches!(c, Change::Cmd(_)));
    for c in changes {
        apply(image_config, c, cmd_set)?;
    }
    Ok(())
}

fn apply(image_config: &mut Value, change: &Change, cmd_set: bool) -> Result<()> {
    let root = image_config
        .as_object_mut()
        .context("the image config is not an object")?;
    let config = object(root, "config")?;
    match change {
        Change::Cmd(c) => {
            config.insert("Cmd".into(), json!(c));
        }
        Change::Entrypoint(e) => {
            config.insert("Entrypoint".into(), json!(e));
            if !cmd_set {
                config.remove("Cmd");
            }
        }
        Change::Env(vars) => {
            let env = config.entry("Env").or_insert_with(|| json!([]));
            if env.is_null() {
                *env = json!([]);
            }
            let env = env
                .as_array_mut()
                .context("the image config's Env is not an array")?;
            for (k, v) in vars {
                let prefix = format!("{k}=");
                env.retain(|e| !e.as_str().is_some_and(|e| e.starts_with(&prefix)));
                env.push(json!(format!("{k}={v}")));
            }
        }
        Change::WorkingDir(w) => {
            config.insert("WorkingDir".into(), json!(w));
        }
        Change::User(u) => {
            config.insert("User".into(), json!(u));
        }
        Change::Labels(labels) => {
            let map = object(config, "Labels")?;
            for (k, v) in labels {
                map.insert(k.clone(), json!(v));
            }
        }
        Change::Expose(ports) => {
            let map = object(config, "ExposedPorts")?;
            for p in ports {
                map.insert(p.clone(), json!({}));
            }
        }
        Change::Volumes(paths) => {
            let map = object(config, "Volumes")?;
            for p in paths {
                map.insert(p.clone(), json!({}));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_parse() {
        assert_eq!(
            parse(r#"CMD ["cat", "/f"]"#).unwrap(),
            Change::Cmd(vec!["cat".into(), "/f".into()])
        );
        assert_eq!(
            parse("cmd echo $HOME").unwrap(),
            Change::Cmd(vec!["/bin/sh".into(), "-c".into(), "echo $HOME".into()])
        );
        assert_eq!(
            parse(r#"ENV A=1 B="two words""#).unwrap(),
            Change::Env(vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into())
            ])
        );
        assert_eq!(
            parse("ENV GREETING hello world").unwrap(),
            Change::Env(vec![("GREETING".into(), "hello world".into())])
        );
        assert_eq!(
            parse("EXPOSE 80 53/udp").unwrap(),
            Change::Expose(vec!["80/tcp".into(), "53/udp".into()])
        );
        assert_eq!(
            parse(r#"VOLUME ["/data"]"#).unwrap(),
            Change::Volumes(vec!["/data".into()])
        );
        assert_eq!(
            parse("WORKDIR /srv").unwrap(),
            Change::WorkingDir("/srv".into())
        );
        for bad in [
            "RUN make",
            "CMD",
            "WORKDIR /a /b",
            "LABEL novalue",
            "ENV A=\"open",
            "CMD [\"x\"",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn changes_apply_to_the_config() {
        let all =
            |lines: &[&str]| -> Vec<Change> { lines.iter().map(|l| parse(l).unwrap()).collect() };
        let mut c = json!({"config": {"Env": ["PATH=/bin", "A=old"], "Cmd": ["sh"]}});
        let changes = all(&[
            "ENV A=new",
            "ENTRYPOINT [\"/bin/echo\"]",
            "LABEL org.example=yes",
            "USER 1000:1000",
        ]);
        apply_all(&mut c, &changes).unwrap();
        assert_eq!(c["config"]["Env"], json!(["PATH=/bin", "A=new"]));
        assert_eq!(c["config"]["Entrypoint"], json!(["/bin/echo"]));
        assert!(c["config"].get("Cmd").is_none());
        assert_eq!(c["config"]["Labels"]["org.example"], "yes");
        assert_eq!(c["config"]["User"], "1000:1000");
        // A Cmd set with the entrypoint stays, whatever the order.
        let mut c = json!({"config": {"Cmd": ["sh"]}});
        apply_all(
            &mut c,
            &all(&["CMD [\"hi\"]", "ENTRYPOINT [\"/bin/echo\"]"]),
        )
        .unwrap();
        assert_eq!(c["config"]["Cmd"], json!(["hi"]));
        let mut bare = json!({});
        apply_all(&mut bare, &all(&["EXPOSE 8080"])).unwrap();
        assert_eq!(bare["config"]["ExposedPorts"], json!({"8080/tcp": {}}));
        let mut wrong = json!({"config": {"Env": "x"}});
        assert!(apply_all(&mut wrong, &all(&["ENV A=1"])).is_err());
    }
}
