//! [`Matcher`]: which platforms a host accepts and in what order of preference, following
//! containerd's `platforms.Only` vector.

use super::{Platform, normalize_arch};

/// Canonical (os, architecture, variant) triple used for comparisons.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    os: String,
    architecture: String,
    variant: String,
}

impl Key {
    fn of(p: &Platform) -> Key {
        let n = p.normalize();
        Key {
            os: n.os,
            architecture: n.architecture,
            variant: n.variant.unwrap_or_default(),
        }
    }

    fn with(&self, architecture: &str, variant: &str) -> Key {
        let (architecture, variant) = normalize_arch(architecture, variant);
        Key {
            os: self.os.clone(),
            architecture,
            variant,
        }
    }
}

/// The vector of platforms `key` can run, best first (containerd's `platformVector`).
fn compatible(key: &Key) -> Vec<Key> {
    let mut out = vec![key.clone()];
    let number = |v: &str| v.strip_prefix('v').and_then(|n| n.parse::<u32>().ok());
    match key.architecture.as_str() {
        "amd64" => {
            if let Some(level) = number(&key.variant) {
                for lower in (1..level).rev() {
                    out.push(key.with("amd64", &format!("v{lower}")));
                }
            }
            out.push(key.with("386", ""));
        }
        "arm" => out.extend(arm_below(key, &key.variant)),
        "arm64" => {
            let variant = if key.variant.is_empty() {
                "v8"
            } else {
                key.variant.as_str()
            };
            let (major, minor) = match variant.strip_prefix('v').map(|v| v.split_once('.')) {
                Some(Some((ma, mi))) => (ma.parse::<u32>().ok(), mi.parse::<u32>().ok()),
                Some(None) => (number(variant), Some(0)),
                None => (None, None),
            };
            // v9.x runs v9.x-1 … v9.0, then v8.(x+5 capped at 9) … v8.0; v8.x runs v8.x-1 … v8.0.
            let mut revisions: Vec<(u32, u32)> = Vec::new();
            match (major, minor) {
                (Some(9), Some(mi)) if mi <= 9 => {
                    revisions.extend((0..=mi).rev().map(|m| (9, m)));
                    revisions.extend((0..=(mi + 5).min(9)).rev().map(|m| (8, m)));
                }
                (Some(8), Some(mi)) if mi <= 9 => {
                    revisions.extend((0..=mi).rev().map(|m| (8, m)));
                }
                _ => {}
            }
            for (ma, mi) in revisions {
                let v = if mi == 0 {
                    format!("v{ma}")
                } else {
                    format!("v{ma}.{mi}")
                };
                let k = key.with("arm64", &v);
                if !out.contains(&k) {
                    out.push(k);
                }
            }
            // Every arm64 revision runs 32-bit arm v8 and below.
            if major.is_some_and(|m| m == 8 || m == 9) {
                out.push(key.with("arm", "v8"));
                out.extend(arm_below(key, "v8"));
            }
        }
        _ => {}
    }
    out
}

/// arm/v(N-1) … arm/v5 for an arm variant vN.
fn arm_below(key: &Key, variant: &str) -> Vec<Key> {
    let level = variant
        .strip_prefix('v')
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(0);
    (5..level.max(5))
        .rev()
        .map(|l| key.with("arm", &format!("v{l}")))
        .collect()
}

/// Decides which platforms are acceptable and which is preferred.
///
/// Immutable and cheap to clone; safe to share between threads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    /// Acceptable platforms, best first; `None` accepts every platform in equal rank.
    accepted: Option<Vec<Key>>,
}

impl Matcher {
    /// Accepts `platform` and, with lower priority, the platforms it can also run (containerd's
    /// `platforms.Only`; see the module docs for the order).
    pub fn only(platform: &Platform) -> Matcher {
        Matcher {
            accepted: Some(compatible(&Key::of(platform))),
        }
    }

    /// Accepts exactly `platform`, up to normalisation (containerd's `OnlyStrict`).
    pub fn strict(platform: &Platform) -> Matcher {
        Matcher {
            accepted: Some(vec![Key::of(platform)]),
        }
    }

    /// Accepts any of `platforms`, preferring them in the order given (containerd's `Ordered`).
    pub fn ordered<'a>(platforms: impl IntoIterator<Item = &'a Platform>) -> Matcher {
        Matcher {
            accepted: Some(platforms.into_iter().map(Key::of).collect()),
        }
    }

    /// The default matcher: [`Matcher::only`] of [`Platform::host`].
    pub fn host() -> Matcher {
        Matcher::only(&Platform::host())
    }

    /// Accepts every platform with no preference (for importing all platforms).
    pub fn all() -> Matcher {
        Matcher { accepted: None }
    }

    /// Whether `platform` is acceptable.
    pub fn matches(&self, platform: &Platform) -> bool {
        self.rank(platform).is_some()
    }

    /// The preference rank of `platform` (0 is best), or `None` if it is not acceptable.
    pub fn rank(&self, platform: &Platform) -> Option<usize> {
        match &self.accepted {
            None => Some(0),
            Some(keys) => {
                let key = Key::of(platform);
                keys.iter().position(|k| *k == key)
            }
        }
    }

    /// Whether `a` is strictly preferred to `b` (acceptable platforms before unacceptable ones).
    pub fn less(&self, a: &Platform, b: &Platform) -> bool {
        match (self.rank(a), self.rank(b)) {
            (Some(ra), Some(rb)) => ra < rb,
            (Some(_), None) => true,
            _ => false,
        }
    }

    /// The best acceptable item of `items`, each with its platform; the first of equally good
    /// items wins. `None` when nothing is acceptable.
    pub fn best<T>(&self, items: impl IntoIterator<Item = (T, Platform)>) -> Option<T> {
        items
            .into_iter()
            .filter_map(|(item, p)| self.rank(&p).map(|r| (r, item)))
            .enumerate()
            .min_by_key(|(i, (r, _))| (*r, *i))
            .map(|(_, (_, item))| item)
    }

    /// The descriptors of `index` this matcher accepts, best first (stable among equals).
    /// Entries without a platform are kept after all matching ones, as containerd does.
    pub fn select<'a>(
        &self,
        index: &'a oci_spec::image::ImageIndex,
    ) -> Vec<&'a oci_spec::image::Descriptor> {
        let mut ranked: Vec<(usize, usize, &oci_spec::image::Descriptor)> = index
            .manifests()
            .iter()
            .enumerate()
            .filter_map(|(i, d)| match d.platform() {
                Some(p) => self.rank(&Platform::from(p)).map(|r| (r, i, d)),
                None => Some((usize::MAX, i, d)),
            })
            .collect();
        ranked.sort_by_key(|(r, i, _)| (*r, *i));
        ranked.into_iter().map(|(_, _, d)| d).collect()
    }
}

impl Default for Matcher {
    /// The host matcher.
    fn default() -> Self {
        Matcher::host()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        Platform::parse(s).unwrap()
    }

    #[test]
    fn arm64_matches_v8_and_empty_variant() {
        let m = Matcher::only(&p("linux/arm64"));
        assert!(m.matches(&Platform::new("linux", "arm64", None)));
        assert!(m.matches(&Platform::new("linux", "arm64", Some("v8"))));
        assert!(m.matches(&Platform::new("linux", "aarch64", Some("8"))));
        assert!(!m.matches(&Platform::new("linux", "arm64", Some("v8.1"))));
        assert!(!m.matches(&Platform::new("linux", "amd64", None)));
        assert!(!m.matches(&Platform::new("windows", "arm64", None)));
        // 32-bit arm is acceptable with lower priority, v8 first.
        assert_eq!(m.rank(&p("linux/arm64/v8")), Some(0));
        assert_eq!(m.rank(&p("linux/arm/v8")), Some(1));
        assert_eq!(m.rank(&p("linux/arm/v7")), Some(2));
        assert_eq!(m.rank(&p("linux/arm/v5")), Some(4));
        let v82 = Matcher::only(&p("linux/arm64/v8.2"));
        assert!(v82.less(&p("linux/arm64/v8.2"), &p("linux/arm64/v8.1")));
        assert!(v82.less(&p("linux/arm64/v8.1"), &p("linux/arm64")));
        assert!(v82.matches(&p("linux/arm64")));
        assert!(!v82.matches(&p("linux/arm64/v8.3")));
        let v92 = Matcher::only(&p("linux/arm64/v9.2"));
        assert!(v92.matches(&p("linux/arm64/v9")));
        assert!(v92.matches(&p("linux/arm64/v8.7")));
        assert!(!v92.matches(&p("linux/arm64/v8.8")));
        assert!(v92.less(&p("linux/arm64/v9"), &p("linux/arm64/v8.7")));
    }

    #[test]
    fn arm_v7_accepts_lower_revisions_in_order() {
        let m = Matcher::only(&p("linux/arm/v7"));
        let v7 = p("linux/arm/v7");
        let v6 = p("linux/arm/v6");
        let v5 = p("linux/arm/v5");
        assert_eq!(m.rank(&v7), Some(0));
        assert_eq!(m.rank(&v6), Some(1));
        assert_eq!(m.rank(&v5), Some(2));
        assert!(
            m.matches(&Platform::new("linux", "arm", None)),
            "arm means arm/v7"
        );
        assert!(!m.matches(&p("linux/arm/v8")));
        assert!(!m.matches(&p("linux/arm64")));
        assert!(m.less(&v7, &v6) && m.less(&v6, &v5) && !m.less(&v5, &v6));
        assert!(
            m.less(&v5, &p("linux/amd64")),
            "acceptable before unacceptable"
        );
        assert!(!m.less(&p("linux/amd64"), &p("linux/s390x")));
        // The strict matcher accepts only the platform itself.
        let strict = Matcher::strict(&v7);
        assert!(strict.matches(&Platform::new("linux", "armhf", None)));
        assert!(!strict.matches(&v6));
    }

    #[test]
    fn amd64_accepts_lower_levels_then_386() {
        let m = Matcher::only(&p("linux/amd64/v3"));
        assert_eq!(m.rank(&p("linux/amd64/v3")), Some(0));
        assert_eq!(m.rank(&p("linux/amd64/v2")), Some(1));
        assert_eq!(m.rank(&p("linux/amd64")), Some(2));
        assert_eq!(m.rank(&p("linux/386")), Some(3));
        assert!(!m.matches(&p("linux/amd64/v4")));
        let plain = Matcher::only(&p("linux/amd64"));
        assert!(plain.matches(&Platform::new("linux", "x86_64", Some("v1"))));
        assert!(plain.matches(&p("linux/386")));
        assert!(!plain.matches(&p("linux/amd64/v2")));
    }

    #[test]
    fn best_and_select_choose_the_preferred_entry() {
        let m = Matcher::only(&p("linux/arm/v7"));
        let candidates = vec![
            ("amd64", p("linux/amd64")),
            ("v5", p("linux/arm/v5")),
            ("v6", p("linux/arm/v6")),
            ("v6-again", p("linux/arm/v6")),
        ];
        assert_eq!(m.best(candidates.clone()), Some("v6"));
        assert_eq!(
            Matcher::only(&p("linux/s390x")).best(candidates.clone()),
            None
        );
        assert_eq!(Matcher::all().best(candidates), Some("amd64"));

        let hex = |c: char| std::iter::repeat_n(c, 64).collect::<String>();
        let json = format!(
            r#"{{"schemaVersion":2,"manifests":[
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1,"digest":"sha256:{}","platform":{{"architecture":"amd64","os":"linux"}}}},
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1,"digest":"sha256:{}","platform":{{"architecture":"arm","os":"linux","variant":"v6"}}}},
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1,"digest":"sha256:{}"}},
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1,"digest":"sha256:{}","platform":{{"architecture":"arm","os":"linux"}}}},
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1,"digest":"sha256:{}","platform":{{"architecture":"unknown","os":"unknown"}}}}]}}"#,
            hex('a'),
            hex('b'),
            hex('c'),
            hex('d'),
            hex('e')
        );
        let index: oci_spec::image::ImageIndex = serde_json::from_str(&json).unwrap();
        let chosen: Vec<String> = m
            .select(&index)
            .iter()
            .map(|d| d.digest().to_string()[7..8].to_owned())
            .collect();
        assert_eq!(chosen, vec!["d", "b", "c"]);
        assert_eq!(Matcher::all().select(&index).len(), 5);
    }
}
