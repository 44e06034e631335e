//! An RFC 6962 Merkle tree log: leaf hash `SHA-256(0x00 || leaf)`, node hash
//! `SHA-256(0x01 || left || right)`, empty tree `SHA-256("")`.
//!
//! A proof needs the hashes of complete, aligned subtrees ([`Subtrees`]): [`MerkleLog`]
//! keeps every one in memory; a store can keep them on disk and answer the same proofs
//! ([`root_at`], [`inclusion_proof`], [`consistency_proof`]) in O(log n) lookups plus
//! O(log² n) hashing for the ragged right edge. [`Frontier`] keeps only the right edge,
//! enough to append and to give the root, and names each subtree an append completes so
//! that a store can keep it.

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
/// [`MerkleLog::root`] without the interior hashes a proof would need; memory O(log n).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    /// Leaves appended.
    size: u64,
    /// (height, hash) of each complete subtree, heights strictly decreasing.
    peaks: Vec<(u32, Digest)>,
}

/// A complete, aligned subtree: the hash of leaves `[index·2^level, (index+1)·2^level)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subtree {
    /// Its height: 0 for a leaf.
    pub level: u32,
    /// Its position among the subtrees of its height.
    pub index: u64,
    /// Its hash.
    pub hash: Digest,
}

impl Subtree {
    /// Where this subtree comes in the order a log completes them (leaves and interior
    /// nodes together, each node right after its last leaf): a key under which a store
    /// only ever appends.
    pub fn position(level: u32, index: u64) -> u64 {
        // The last leaf of the subtree, then the `level` nodes completed on top of it.
        let last = ((index + 1) << level) - 1;
        2 * last - u64::from(last.count_ones()) + u64::from(level)
    }
}

impl Frontier {
    /// The frontier of a log of `size` leaves, from the hashes of the complete subtrees its
    /// binary digits name, largest first ([`Frontier::peak_positions`]); `None` if there
    /// are not exactly that many.
    pub fn from_peaks(size: u64, hashes: &[Digest]) -> Option<Frontier> {
        let positions = Frontier::peak_positions(size);
        (positions.len() == hashes.len()).then(|| Frontier {
            size,
            peaks: positions
                .iter()
                .zip(hashes)
                .map(|(&(level, _), hash)| (level, *hash))
                .collect(),
        })
    }

    /// The (level, index) of each complete subtree whose hashes make up the frontier of a
    /// log of `size` leaves, largest first.
    pub fn peak_positions(size: u64) -> Vec<(u32, u64)> {
        let mut out = Vec::new();
        let mut start = 0u64;
        for level in (0..64u32).rev() {
            if size & (1 << level) != 0 {
                out.push((level, start >> level));
                start += 1 << level;
            }
        }
        out
    }

    /// Leaves appended.
    pub fn len(&self) -> u64 {
        self.size
    }

    /// Whether no leaf was appended.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Appends a leaf's data; returns its index.
    pub fn append(&mut self, leaf: &[u8]) -> u64 {
        self.append_hash(leaf_hash(leaf))
    }

    /// Appends an already computed leaf hash; returns its index.
    pub fn append_hash(&mut self, hash: Digest) -> u64 {
        self.append_hash_with(hash, |_| {})
    }

    /// Appends an already computed leaf hash, handing `completed` every interior subtree
    /// (level ≥ 1) the leaf completes, lowest first; returns the leaf's index.
    pub fn append_hash_with(&mut self, hash: Digest, mut completed: impl FnMut(Subtree)) -> u64 {
        let index = self.size;
        let mut carry = (0u32, hash);
        while let Some(&(height, left)) = self.peaks.last() {
            if height != carry.0 {
                break;
            }
            self.peaks.pop();
            carry = (height + 1, node_hash(&left, &carry.1));
            completed(Subtree {
                level: carry.0,
                index: index >> carry.0,
                hash: carry.1,
            });
        }
        self.peaks.push(carry);
        self.size += 1;
        index
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

/// Where the hashes of a log's complete, aligned subtrees are read from: enough to give its
/// root at any size and any proof ([`root_at`], [`inclusion_proof`], [`consistency_proof`]).
pub trait Subtrees {
    /// Why a hash could not be read.
    type Error;

    /// Leaves in the log.
    fn size(&self) -> u64;

    /// The hash of leaves `[index·2^level, (index+1)·2^level)`; asked only for subtrees
    /// that lie within [`Self::size`].
    fn complete(&self, level: u32, index: u64) -> Result<Digest, Self::Error>;
}

/// Why a proof could not be made from a [`Subtrees`] source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError<E> {
    /// The log cannot answer this request.
    #[error(transparent)]
    Proof(#[from] ProofError),
    /// A subtree's hash could not be read.
    #[error("reading the log: {0}")]
    Source(E),
}

fn check_size<S: Subtrees>(log: &S, size: u64) -> Result<(), ProofError> {
    if size > log.size() {
        return Err(ProofError::SizeOutOfRange {
            size,
            len: log.size(),
        });
    }
    Ok(())
}

/// MTH(D[start..end]); requires `start < end <= size`.
fn subtree<S: Subtrees>(log: &S, start: u64, end: u64) -> Result<Digest, S::Error> {
    let n = end - start;
    if n.is_power_of_two() && start.is_multiple_of(n) {
        return log.complete(n.trailing_zeros(), start / n);
    }
    let k = largest_power_of_two_below(n);
    Ok(node_hash(
        &subtree(log, start, start + k)?,
        &subtree(log, start + k, end)?,
    ))
}

/// The root of the first `size` leaves of `log`.
pub fn root_at<S: Subtrees>(log: &S, size: u64) -> Result<Digest, LogError<S::Error>> {
    check_size(log, size)?;
    if size == 0 {
        return Ok(empty_root());
    }
    subtree(log, 0, size).map_err(LogError::Source)
}

/// The audit path of leaf `index` in the tree of the first `size` leaves of `log`
/// (RFC 6962 2.1.1), ordered from the leaf upwards.
pub fn inclusion_proof<S: Subtrees>(
    log: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Digest>, LogError<S::Error>> {
    check_size(log, size)?;
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size }.into());
    }
    let mut path = Vec::new();
    audit_path(log, index, 0, size, &mut path).map_err(LogError::Source)?;
    Ok(path)
}

fn audit_path<S: Subtrees>(
    log: &S,
    m: u64,
    start: u64,
    end: u64,
    out: &mut Vec<Digest>,
) -> Result<(), S::Error> {
    let n = end - start;
    if n <= 1 {
        return Ok(());
    }
    let k = largest_power_of_two_below(n);
    if m < k {
        audit_path(log, m, start, start + k, out)?;
        out.push(subtree(log, start + k, end)?);
    } else {
        audit_path(log, m - k, start + k, end, out)?;
        out.push(subtree(log, start, start + k)?);
    }
    Ok(())
}

/// The consistency proof from the tree of the first `first` leaves of `log` to the tree of
/// its first `second` leaves (RFC 6962 2.1.2).
pub fn consistency_proof<S: Subtrees>(
    log: &S,
    first: u64,
    second: u64,
) -> Result<Vec<Digest>, LogError<S::Error>> {
    check_size(log, second)?;
    if first == 0 || first > second {
        return Err(ProofError::BadRange { first, second }.into());
    }
    let mut proof = Vec::new();
    if first < second {
        subproof(log, first, 0, second, true, &mut proof).map_err(LogError::Source)?;
    }
    Ok(proof)
}

fn subproof<S: Subtrees>(
    log: &S,
    m: u64,
    start: u64,
    end: u64,
    complete: bool,
    out: &mut Vec<Digest>,
) -> Result<(), S::Error> {
    let n = end - start;
    if m == n {
        if !complete {
            out.push(subtree(log, start, end)?);
        }
        return Ok(());
    }
    let k = largest_power_of_two_below(n);
    if m <= k {
        subproof(log, m, start, start + k, complete, out)?;
        out.push(subtree(log, start + k, end)?);
    } else {
        subproof(log, m - k, start + k, end, false, out)?;
        out.push(subtree(log, start, start + k)?);
    }
    Ok(())
}

/// The answer of a source whose own errors are proof errors.
fn flatten<T>(r: Result<T, LogError<ProofError>>) -> Result<T, ProofError> {
    r.map_err(|e| match e {
        LogError::Proof(p) | LogError::Source(p) => p,
    })
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
        flatten(root_at(self, size))
    }

    /// The audit path of leaf `index` in the tree of the first `size` leaves (RFC 6962 2.1.1),
    /// ordered from the leaf upwards.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Digest>, ProofError> {
        flatten(inclusion_proof(self, index, size))
    }

    /// The consistency proof from the tree of `first` leaves to the tree of `second` leaves
    /// (RFC 6962 2.1.2).
    pub fn consistency_proof(&self, first: u64, second: u64) -> Result<Vec<Digest>, ProofError> {
        flatten(consistency_proof(self, first, second))
    }
}

impl Subtrees for MerkleLog {
    type Error = ProofError;

    fn size(&self) -> u64 {
        self.len()
    }

    /// Every complete subtree within the log is kept; asking for one beyond it is an error.
    fn complete(&self, level: u32, index: u64) -> Result<Digest, ProofError> {
        usize::try_from(level)
            .ok()
            .and_then(|l| self.levels.get(l))
            .zip(usize::try_from(index).ok())
            .and_then(|(row, i)| row.get(i))
            .copied()
            .ok_or(ProofError::SizeOutOfRange {
                size: index.saturating_add(1).saturating_mul(1 << level.min(63)),
                len: self.len(),
            })
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

    /// A log as a store keeps it: the leaf hashes and the interior subtrees a [`Frontier`]
    /// reported, keyed by [`Subtree::position`].
    struct Stored {
        size: u64,
        leaves: Vec<Digest>,
        nodes: std::collections::BTreeMap<u64, Digest>,
    }

    impl Subtrees for Stored {
        type Error = String;
        fn size(&self) -> u64 {
            self.size
        }
        fn complete(&self, level: u32, index: u64) -> Result<Digest, String> {
            if level == 0 {
                return self
                    .leaves
                    .get(index as usize)
                    .copied()
                    .ok_or("no leaf".into());
            }
            self.nodes
                .get(&Subtree::position(level, index))
                .copied()
                .ok_or_else(|| format!("no subtree {level}/{index}"))
        }
    }

    fn stored_of(n: u64) -> (Stored, Frontier) {
        let mut frontier = Frontier::default();
        let mut stored = Stored {
            size: n,
            leaves: Vec::new(),
            nodes: Default::default(),
        };
        for i in 0..n {
            let hash = leaf_hash(&i.to_be_bytes());
            stored.leaves.push(hash);
            let mut last = Subtree::position(0, i);
            frontier.append_hash_with(hash, |node| {
                let at = Subtree::position(node.level, node.index);
                assert!(at > last, "positions only grow as the log grows");
                last = at;
                assert!(stored.nodes.insert(at, node.hash).is_none());
            });
        }
        (stored, frontier)
    }

    #[test]
    fn positions_follow_the_order_subtrees_complete() {
        // Leaves 0 1, node (1,0), leaves 2 3, nodes (1,1) (2,0), leaf 4.
        let order = [
            (0, 0),
            (0, 1),
            (1, 0),
            (0, 2),
            (0, 3),
            (1, 1),
            (2, 0),
            (0, 4),
        ];
        for (at, (level, index)) in order.into_iter().enumerate() {
            assert_eq!(Subtree::position(level, index), at as u64);
        }
        assert_eq!(Subtree::position(3, 0), 14);
        assert_eq!(Subtree::position(0, 8), 15);
    }

    #[test]
    fn a_missing_subtree_is_an_error_not_a_wrong_proof() {
        let (mut stored, _) = stored_of(9);
        // Leaf 0's path in 9 leaves: leaf 1, then subtrees (1,1), (2,1) and leaf 8.
        stored.nodes.remove(&Subtree::position(2, 1));
        assert_eq!(
            inclusion_proof(&stored, 0, 9),
            Err(LogError::Source("no subtree 2/1".to_string()))
        );
        assert!(matches!(
            root_at(&stored, 10),
            Err(LogError::Proof(ProofError::SizeOutOfRange {
                size: 10,
                len: 9
            }))
        ));
    }

    proptest! {
        #[test]
        fn stored_subtrees_give_the_proofs_of_the_whole_log(n in 1u64..200, a in any::<u64>(), b in any::<u64>()) {
            let log = log_of(n as usize);
            let (stored, frontier) = stored_of(n);
            // A frontier reports every complete interior subtree exactly once.
            prop_assert_eq!(stored.nodes.len() as u64, n - u64::from(n.count_ones()));
            prop_assert_eq!(frontier.len(), n);
            prop_assert_eq!(frontier.root(), log.root());
            let second = 1 + a % n;
            let first = 1 + b % second;
            let index = b % second;
            prop_assert_eq!(root_at(&stored, second).unwrap(), log.root_at(second).unwrap());
            prop_assert_eq!(
                inclusion_proof(&stored, index, second).unwrap(),
                log.inclusion_proof(index, second).unwrap()
            );
            prop_assert_eq!(
                consistency_proof(&stored, first, second).unwrap(),
                log.consistency_proof(first, second).unwrap()
            );
            // The frontier read back from the stored peaks is the same frontier.
            let peaks: Vec<Digest> = Frontier::peak_positions(n)
                .into_iter()
                .map(|(level, index)| stored.complete(level, index).unwrap())
                .collect();
            prop_assert_eq!(Frontier::from_peaks(n, &peaks), Some(frontier.clone()));
            prop_assert_eq!(Frontier::from_peaks(n, &peaks[1..]), None);
        }

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
