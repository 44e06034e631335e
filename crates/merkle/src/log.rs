//! An RFC 6962 Merkle tree log: leaf hash `SHA-256(0x00 || leaf)`, node hash
//! `SHA-256(0x01 || left || right)`, empty tree `SHA-256("")`.
//!
//! The tree keeps every complete, aligned subtree hash, so appending is amortised O(1) and
//! proofs take O(log n) lookups plus O(log² n) hashing for the ragged right edge.

use crate::{Digest, sha256};

/// `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Digest {
    sha256(&[&[0x00], data])
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Digest, right: &Digest) -> Digest {
    sha256(&[&[0x01], left, right])
}

/// The root of the empty tree, `SHA-256("")`.
pub fn empty_root() -> Digest {
    sha256(&[])
}

/// A proof request the log cannot answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The leaf index is not below the tree size.
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange {
        /// Index asked for.
        index: u64,
        /// Tree size asked for.
        size: u64,
    },
    /// The tree size is larger than the log.
    #[error("tree size {size} is larger than the log's {len} leaves")]
    SizeOutOfRange {
        /// Size asked for.
        size: u64,
        /// Leaves in the log.
        len: u64,
    },
    /// A consistency proof between sizes in the wrong order or from zero.
    #[error("no consistency proof from size {first} to size {second}")]
    BadRange {
        /// First size.
        first: u64,
        /// Second size.
        second: u64,
    },
}

/// The root of a tree built leaf by leaf, keeping only its right edge: the hash of each
/// complete subtree the size's binary digits name, largest first. Gives
/// [`MerkleLog::root`] without the interior hashes a proof would need.
#[derive(Debug, Clone, Default)]
pub struct Frontier {
    /// (height, hash) of each complete subtree, heights strictly decreasing.
    peaks: Vec<(u32, Digest)>,
}

impl Frontier {
    /// Appends an already computed leaf hash.
    pub fn append_hash(&mut self, hash: Digest) {
        let mut carry = (0u32, hash);
        while let Some(&(height, left)) = self.peaks.last() {
            if height != carry.0 {
                break;
            }
            self.peaks.pop();
            carry = (height + 1, node_hash(&left, &carry.1));
        }
        self.peaks.push(carry);
    }

    /// The root of the leaves appended so far (of none: [`empty_root`]).
    pub fn root(&self) -> Digest {
        let mut peaks = self.peaks.iter().rev();
        let Some(&(_, mut root)) = peaks.next() else {
            return empty_root();
        };
        for (_, left) in peaks {
            root = node_hash(left, &root);
        }
        root
    }
}

/// An append-only Merkle tree of leaf hashes.
#[derive(Debug, Clone, Default)]
pub struct MerkleLog {
    /// `levels[k][i]` is the hash of leaves `[i·2^k, (i+1)·2^k)`, for complete subtrees only.
    levels: Vec<Vec<Digest>>,
}

impl MerkleLog {
    /// An empty log.
    pub fn new() -> MerkleLog {
        MerkleLog::default()
    }

    /// Number of leaves.
    pub fn len(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// Whether the log has no leaves.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends a leaf's data; returns its index.
    pub fn append(&mut self, leaf: &[u8]) -> u64 {
        self.append_hash(leaf_hash(leaf))
    }

    /// Appends an already computed leaf hash; returns its index.
    pub fn append_hash(&mut self, hash: Digest) -> u64 {
        let index = self.len();
        let mut level = 0usize;
        let mut carry = hash;
        loop {
            if self.levels.len() <= level {
                self.levels.push(Vec::new());
            }
            let Some(row) = self.levels.get_mut(level) else {
                break;
            };
            row.push(carry);
            let n = row.len();
            if n % 2 == 1 {
                break;
            }
            match (row.get(n - 2), row.get(n - 1)) {
                (Some(l), Some(r)) => carry = node_hash(l, r),
                _ => break,
            }
            level += 1;
        }
        index
    }

    /// The hash of leaf `index`.
    pub fn leaf_hash_at(&self, index: u64) -> Option<Digest> {
        self.levels
            .first()?
            .get(usize::try_from(index).ok()?)
            .copied()
    }

    /// The root of the whole log.
    pub fn root(&self) -> Digest {
        self.root_at(self.len()).unwrap_or_else(|_| empty_root())
    }

    /// The root of the first `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<Digest, ProofError> {
        self.check_size(size)?;
        if size == 0 {
            return Ok(empty_root());
        }
        Ok(self.subtree(0, size))
    }

    fn check_size(&self, size: u64) -> Result<(), ProofError> {
        if size > self.len() {
            return Err(ProofError::SizeOutOfRange {
                size,
                len: self.len(),
            });
        }
        Ok(())
    }

    /// MTH(D[start..end]); requires `start < end <= len`.
    fn subtree(&self, start: u64, end: u64) -> Digest {
        let n = end - start;
        if n.is_power_of_two() && start.is_multiple_of(n) {
            let level = n.trailing_zeros() as usize;
            let idx = (start / n) as usize;
            if let Some(h) = self.levels.get(level).and_then(|row| row.get(idx)) {
                return *h;
            }
        }
        let k = largest_power_of_two_below(n);
        node_hash(
            &self.subtree(start, start + k),
            &self.subtree(start + k, end),
        )
    }

    /// The audit path of leaf `index` in the tree of the first `size` leaves (RFC 6962 2.1.1),
    /// ordered from the leaf upwards.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Digest>, ProofError> {
        self.check_size(size)?;
        if index >= size {
            return Err(ProofError::IndexOutOfRange { index, size });
        }
        let mut path = Vec::new();
        self.path(index, 0, size, &mut path);
        Ok(path)
    }

    fn path(&self, m: u64, start: u64, end: u64, out: &mut Vec<Digest>) {
        let n = end - start;
        if n <= 1 {
            return;
        }
        let k = largest_power_of_two_below(n);
        if m < k {
            self.path(m, start, start + k, out);
            out.push(self.subtree(start + k, end));
        } else {
            self.path(m - k, start + k, end, out);
            out.push(self.subtree(start, start + k));
        }
    }

    /// The consistency proof from the tree of `first` leaves to the tree of `second` leaves
    /// (RFC 6962 2.1.2).
    pub fn consistency_proof(&self, first: u64, second: u64) -> Result<Vec<Digest>, ProofError> {
        self.check_size(second)?;
        if first == 0 || first > second {
            return Err(ProofError::BadRange { first, second });
        }
        let mut proof = Vec::new();
        if first < second {
            self.subproof(first, 0, second, true, &mut proof);
        }
        Ok(proof)
    }

    fn subproof(&self, m: u64, start: u64, end: u64, complete: bool, out: &mut Vec<Digest>) {
        let n = end - start;
        if m == n {
            if !complete {
                out.push(self.subtree(start, end));
            }
            return;
        }
        let k = largest_power_of_two_below(n);
        if m <= k {
            self.subproof(m, start, start + k, complete, out);
            out.push(self.subtree(start + k, end));
        } else {
            self.subproof(m - k, start + k, end, false, out);
            out.push(self.subtree(start, start + k));
        }
    }
}

/// The largest power of two strictly below `n` (`n >= 2`).
fn largest_power_of_two_below(n: u64) -> u64 {
    if n < 2 {
        return 0;
    }
    1u64 << (63 - (n - 1).leading_zeros())
}

/// Why a proof does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The leaf index is not below the tree size.
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange {
        /// Index.
        index: u64,
        /// Tree size.
        size: u64,
    },
    /// The proof has the wrong number of hashes for these sizes.
    #[error("proof has {got} hashes where these sizes need {expected}")]
    WrongLength {
        /// Hashes given.
        got: usize,
        /// Hashes expected.
        expected: usize,
    },
    /// The computed root is not the claimed root.
    #[error("computed root does not match the claimed root")]
    RootMismatch,
    /// Sizes in the wrong order.
    #[error("first size {first} is larger than second size {second}")]
    BadRange {
        /// First size.
        first: u64,
        /// Second size.
        second: u64,
    },
}

/// Verifies an inclusion proof (RFC 9162 2.1.3.2).
pub fn verify_inclusion(
    leaf_hash: &Digest,
    index: u64,
    size: u64,
    proof: &[Digest],
    root: &Digest,
) -> Result<(), VerifyError> {
    if index >= size {
        return Err(VerifyError::IndexOutOfRange { index, size });
    }
    let (inner, border) = decompose_inclusion(index, size);
    if proof.len() != inner + border {
        return Err(VerifyError::WrongLength {
            got: proof.len(),
            expected: inner + border,
        });
    }
    let mut fnum = index;
    let mut snum = size - 1;
    let mut r = *leaf_hash;
    for p in proof {
        if snum == 0 {
            return Err(VerifyError::RootMismatch);
        }
        if fnum & 1 == 1 || fnum == snum {
            r = node_hash(p, &r);
            if fnum & 1 == 0 {
                while fnum & 1 == 0 && fnum != 0 {
                    fnum >>= 1;
                    snum >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnum >>= 1;
        snum >>= 1;
    }
    if snum != 0 || &r != root {
        return Err(VerifyError::RootMismatch);
    }
    Ok(())
}

fn decompose_inclusion(index: u64, size: u64) -> (usize, usize) {
    let inner = (64 - (index ^ (size - 1)).leading_zeros()) as usize;
    let border = (index >> inner).count_ones() as usize;
    (inner, border)
}

/// Verifies a consistency proof (RFC 9162 2.1.4.2).
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Digest,
    second_root: &Digest,
    proof: &[Digest],
) -> Result<(), VerifyError> {
    if first > second {
        return Err(VerifyError::BadRange { first, second });
    }
    if first == second {
        if !proof.is_empty() {
            return Err(VerifyError::WrongLength {
                got: proof.len(),
                expected: 0,
            });
        }
        return if first_root == second_root {
            Ok(())
        } else {
            Err(VerifyError::RootMismatch)
        };
    }
    if first == 0 {
        // Every tree extends the empty tree; RFC 9162 defines no proof for it.
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(VerifyError::WrongLength {
                got: proof.len(),
                expected: 0,
            })
        };
    }
    let mut path: Vec<Digest> = proof.to_vec();
    if first.is_power_of_two() {
        path.insert(0, *first_root);
    }
    let mut fnum = first - 1;
    let mut snum = second - 1;
    while fnum & 1 == 1 {
        fnum >>= 1;
        snum >>= 1;
    }
    let Some((head, rest)) = path.split_first() else {
        return Err(VerifyError::WrongLength {
            got: 0,
            expected: 1,
        });
    };
    let mut fr = *head;
    let mut sr = *head;
    for c in rest {
        if snum == 0 {
            return Err(VerifyError::RootMismatch);
        }
        if fnum & 1 == 1 || fnum == snum {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnum & 1 == 0 {
                while fnum & 1 == 0 && fnum != 0 {
                    fnum >>= 1;
                    snum >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnum >>= 1;
        snum >>= 1;
    }
    if snum != 0 || &fr != first_root || &sr != second_root {
        return Err(VerifyError::RootMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The RFC 6962 test leaves used by Certificate Transparency implementations.
    fn ct_leaves() -> Vec<Vec<u8>> {
        [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ]
        .iter()
        .map(|h| hex::decode(h).unwrap())
        .collect()
    }

    /// Roots of the first 1..=8 CT test leaves.
    const CT_ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn log_of(n: usize) -> MerkleLog {
        let mut log = MerkleLog::new();
        for i in 0..n {
            log.append(&(i as u64).to_be_bytes());
        }
        log
    }

    /// MTH computed straight from RFC 6962's definition.
    fn reference_root(leaves: &[Digest]) -> Digest {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = largest_power_of_two_below(n as u64) as usize;
                node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
            }
        }
    }

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        assert_eq!(
            hex::encode(MerkleLog::new().root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn roots_match_certificate_transparency_vectors() {
        let mut log = MerkleLog::new();
        for (i, leaf) in ct_leaves().iter().enumerate() {
            log.append(leaf);
            assert_eq!(hex::encode(log.root()), CT_ROOTS[i], "size {}", i + 1);
        }
        for (i, root) in CT_ROOTS.iter().enumerate() {
            assert_eq!(hex::encode(log.root_at(i as u64 + 1).unwrap()), *root);
        }
    }

    #[test]
    fn ct_inclusion_vector() {
        let mut log = MerkleLog::new();
        for leaf in ct_leaves() {
            log.append(&leaf);
        }
        // Leaf 0 in the tree of 8 (from the CT test suite).
        let path: Vec<String> = log
            .inclusion_proof(0, 8)
            .unwrap()
            .iter()
            .map(hex::encode)
            .collect();
        assert_eq!(
            path,
            [
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ]
        );
    }

    #[test]
    fn ct_consistency_vector() {
        let mut log = MerkleLog::new();
        for leaf in ct_leaves() {
            log.append(&leaf);
        }
        let proof: Vec<String> = log
            .consistency_proof(1, 8)
            .unwrap()
            .iter()
            .map(hex::encode)
            .collect();
        assert_eq!(
            proof,
            [
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ]
        );
    }

    #[test]
    fn proof_errors_are_typed() {
        let log = log_of(5);
        assert_eq!(
            log.inclusion_proof(5, 5),
            Err(ProofError::IndexOutOfRange { index: 5, size: 5 })
        );
        assert_eq!(
            log.inclusion_proof(0, 6),
            Err(ProofError::SizeOutOfRange { size: 6, len: 5 })
        );
        assert_eq!(
            log.consistency_proof(0, 3),
            Err(ProofError::BadRange {
                first: 0,
                second: 3
            })
        );
    }

    #[test]
    fn tampered_proofs_fail() {
        let log = log_of(13);
        let root = log.root();
        let leaf = log.leaf_hash_at(6).unwrap();
        let mut proof = log.inclusion_proof(6, 13).unwrap();
        assert_eq!(verify_inclusion(&leaf, 6, 13, &proof, &root), Ok(()));
        assert_eq!(
            verify_inclusion(&leaf, 7, 13, &proof, &root),
            Err(VerifyError::RootMismatch)
        );
        proof[1][0] ^= 1;
        assert_eq!(
            verify_inclusion(&leaf, 6, 13, &proof, &root),
            Err(VerifyError::RootMismatch)
        );
        proof.pop();
        assert!(matches!(
            verify_inclusion(&leaf, 6, 13, &proof, &root),
            Err(VerifyError::WrongLength { .. })
        ));
    }

    proptest! {
        #[test]
        fn frontier_root_is_the_logs_root(leaves in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut log = MerkleLog::new();
            let mut frontier = Frontier::default();
            prop_assert_eq!(frontier.root(), log.root());
            for leaf in &leaves {
                log.append(&[*leaf]);
                frontier.append_hash(leaf_hash(&[*leaf]));
                prop_assert_eq!(frontier.root(), log.root());
            }
        }

        #[test]
        fn roots_match_the_definition(n in 0usize..200) {
            let log = log_of(n);
            let leaves: Vec<Digest> = (0..n).map(|i| leaf_hash(&(i as u64).to_be_bytes())).collect();
            for size in 0..=n {
                prop_assert_eq!(log.root_at(size as u64).unwrap(), reference_root(&leaves[..size]));
            }
        }

        #[test]
        fn every_inclusion_proof_verifies(n in 1u64..150, seed in any::<u64>()) {
            let log = log_of(n as usize);
            let size = 1 + seed % n;
            let index = (seed / 7) % size;
            let root = log.root_at(size).unwrap();
            let proof = log.inclusion_proof(index, size).unwrap();
            let leaf = log.leaf_hash_at(index).unwrap();
            prop_assert_eq!(verify_inclusion(&leaf, index, size, &proof, &root), Ok(()));
            let wrong = leaf_hash(b"not in the log");
            prop_assert!(verify_inclusion(&wrong, index, size, &proof, &root).is_err());
        }

        #[test]
        fn every_consistency_proof_verifies(n in 1u64..150, a in any::<u64>(), b in any::<u64>()) {
            let log = log_of(n as usize);
            let second = 1 + a % n;
            let first = 1 + b % second;
            let proof = log.consistency_proof(first, second).unwrap();
            let r1 = log.root_at(first).unwrap();
            let r2 = log.root_at(second).unwrap();
            prop_assert_eq!(verify_consistency(first, second, &r1, &r2, &proof), Ok(()));
            if first < second {
                let bad = leaf_hash(b"forged");
                prop_assert!(verify_consistency(first, second, &bad, &r2, &proof).is_err());
                prop_assert!(verify_consistency(first, second, &r1, &bad, &proof).is_err());
            }
        }
    }
}
