//! Layer chain IDs: the identity of a stack of layers, as the OCI image spec defines it.
//!
//! `ChainID(L0) = DiffID(L0)` and `ChainID(L0..Ln) = sha256(ChainID(L0..Ln-1) + " " + DiffID(Ln))`.
//! Snapshots of unpacked images are named by chain ID, so equal stacks are shared across images.

use crate::digest::Digest;

/// The chain ID of every prefix of `diff_ids`: element `i` names the stack of layers `0..=i`.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match out.last() {
            None => diff_id.clone(),
            Some(parent) => Digest::sha256(format!("{parent} {diff_id}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// The chain ID of the whole stack, or `None` for no layers.
pub fn chain_id(diff_ids: &[Digest]) -> Option<Digest> {
    chain_ids(diff_ids).pop()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_spec_formula() {
        let a = Digest::sha256(b"a");
        let b = Digest::sha256(b"b");
        let c = Digest::sha256(b"c");
        let ids = chain_ids(&[a.clone(), b.clone(), c.clone()]);
        assert_eq!(ids[0], a);
        let ab = Digest::sha256(format!("{a} {b}").as_bytes());
        assert_eq!(ids[1], ab);
        assert_eq!(ids[2], Digest::sha256(format!("{ab} {c}").as_bytes()));
        assert_eq!(chain_id(&[]), None);
    }
}
