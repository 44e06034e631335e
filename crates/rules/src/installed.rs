//! The rules a node has installed, and the access-request scorer they make.
//!
//! A node's rules directory holds installed rules as `<content hash>.rule` and, optionally,
//! the node's own detector as `local.detector` (trained with `secnet ai train --dataset
//! access-requests`). Installing verifies a rule (format, publisher signature, embedded
//! detector) and, when given, its registered hash before anything is written, then renames
//! it into place, so a half-written or altered file is never loaded. The directory is
//! re-read when its listing changes; a file that fails to load is reported, not used.
//!
//! [`Installed`] implements the Private Data Center's [`Scorer`]: every detector that scores
//! access requests (the local one and each installed rule) rates the request, its score is
//! mapped so that its own operating threshold lands on the node's refusal threshold, and the
//! request gets the highest of these and of the transparent [`RuleScorer`]: any one rule
//! that recognises an attack is enough to refuse it.

use crate::artifact::{RuleError, SecurityRule};
use secnet_ai::data::Kind;
use secnet_ai::model::Detector;
use secnet_ai::requests::Request;
use secnet_pdc::access::{RequestFeatures, RuleScorer, Scorer};
use secnet_types::Hash;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

/// The node's own detector's file name in the rules directory.
pub const LOCAL_DETECTOR: &str = "local.detector";

pub use secnet_api::pdc::RuleInfo;

struct Entry {
    info: RuleInfo,
    detector: Detector,
}

#[derive(Default)]
struct Loaded {
    entries: Vec<Entry>,
    refused: Vec<(String, String)>,
}

type Fingerprint = Vec<(String, u64, Option<SystemTime>)>;

/// A node's installed rules.
pub struct Installed {
    dir: PathBuf,
    threshold_ppm: u32,
    loaded: RwLock<Arc<Loaded>>,
    seen: Mutex<Option<Fingerprint>>,
}

impl std::fmt::Debug for Installed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Installed")
            .field("dir", &self.dir)
            .field("rules", &self.list().len())
            .finish_non_exhaustive()
    }
}

/// An install refused.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The rule does not verify.
    #[error(transparent)]
    Rule(#[from] RuleError),
    /// It is not what the ledger registered.
    #[error("the rule's content hash is {found}, but {expected} was registered: refusing it")]
    Mismatch {
        /// Registered.
        expected: Hash,
        /// Computed.
        found: Hash,
    },
    /// The same or a newer version is installed.
    #[error(
        "{name} version {installed} by this publisher is already installed ({offered} offered)"
    )]
    NotNewer {
        /// The rule name.
        name: String,
        /// Installed version.
        installed: u32,
        /// Offered version.
        offered: u32,
    },
    /// I/O.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn fingerprint(dir: &Path) -> Fingerprint {
    let mut out: Fingerprint = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let relevant = name.ends_with(".rule") || name == LOCAL_DETECTOR;
            let meta = e.metadata().ok()?;
            relevant.then(|| (name, meta.len(), meta.modified().ok()))
        })
        .collect();
    out.sort();
    out
}

fn load_dir(dir: &Path) -> Loaded {
    let mut loaded = Loaded::default();
    for (name, _, _) in fingerprint(dir) {
        let path = dir.join(&name);
        if name == LOCAL_DETECTOR {
            match Detector::load(&path) {
                Ok(d) => loaded.entries.push(Entry {
                    info: RuleInfo {
                        hash: "local".into(),
                        name: "local".into(),
                        version: 0,
                        category: "any".into(),
                        publisher: None,
                        dataset: d.provenance.dataset.to_string(),
                        scores_requests: d.provenance.dataset == Kind::AccessRequests,
                        f1: d.provenance.validation.f1,
                        dr_at_1pct_fpr: d.provenance.validation.dr_at_1pct_fpr,
                    },
                    detector: d,
                }),
                Err(e) => loaded.refused.push((name, e.to_string())),
            }
            continue;
        }
        let rule = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| SecurityRule::from_bytes(&b).map_err(|e| e.to_string()));
        match rule {
            Ok(rule) if name == format!("{}.rule", rule.hash()) => {
                loaded.entries.push(Entry {
                    info: info_of(&rule),
                    detector: rule.detector,
                });
            }
            Ok(rule) => loaded.refused.push((
                name,
                format!(
                    "its content hash is {}: not the name it was installed under",
                    rule.hash()
                ),
            )),
            Err(e) => loaded.refused.push((name, e)),
        }
    }
    for (file, reason) in &loaded.refused {
        tracing::warn!(file, reason, "security rule not loaded");
    }
    loaded
}

fn info_of(rule: &SecurityRule) -> RuleInfo {
    let m = &rule.meta;
    RuleInfo {
        hash: rule.hash().to_string(),
        name: m.name.clone(),
        version: m.version,
        category: m.category.clone(),
        publisher: Some(m.publisher),
        dataset: m.dataset.to_string(),
        scores_requests: m.dataset == Kind::AccessRequests,
        f1: m.validation.f1,
        dr_at_1pct_fpr: m.validation.dr_at_1pct_fpr,
    }
}

/// Maps a detector's score to parts per million so that its operating threshold lands on
/// `at` (the node's refusal threshold): linear below and above it. A score that is not a
/// number (a broken detector) counts as certainly malicious.
pub fn calibrate(score: f32, operating: f32, at: u32) -> u32 {
    if score.is_nan() {
        return 1_000_000;
    }
    let s = f64::from(score).clamp(0.0, 1.0);
    let t = f64::from(operating).clamp(1e-6, 1.0 - 1e-6);
    let at = f64::from(at.min(1_000_000));
    let ppm = if s < t {
        s / t * at
    } else {
        at + (s - t) / (1.0 - t) * (1_000_000.0 - at)
    };
    ppm.round().clamp(0.0, 1_000_000.0) as u32
}

impl Installed {
    /// The rules in `dir` (created if missing), scoring against refusal threshold
    /// `threshold_ppm`.
    pub fn open(dir: &Path, threshold_ppm: u32) -> std::io::Result<Installed> {
        std::fs::create_dir_all(dir)?;
        let installed = Installed {
            dir: dir.to_path_buf(),
            threshold_ppm,
            loaded: RwLock::new(Arc::new(Loaded::default())),
            seen: Mutex::new(None),
        };
        installed.reload();
        Ok(installed)
    }

    /// Re-reads the directory if its listing changed since the last read. Returns whether
    /// it did.
    pub fn reload(&self) -> bool {
        let now = fingerprint(&self.dir);
        let Ok(mut seen) = self.seen.lock() else {
            return false;
        };
        if seen.as_ref() == Some(&now) {
            return false;
        }
        let fresh = Arc::new(load_dir(&self.dir));
        if let Ok(mut l) = self.loaded.write() {
            *l = fresh;
        }
        *seen = Some(now);
        true
    }

    fn current(&self) -> Arc<Loaded> {
        self.loaded
            .read()
            .map(|l| l.clone())
            .unwrap_or_else(|_| Arc::new(Loaded::default()))
    }

    /// The rules in use.
    pub fn list(&self) -> Vec<RuleInfo> {
        self.current()
            .entries
            .iter()
            .map(|e| e.info.clone())
            .collect()
    }

    /// Files in the directory that failed to load, with the reason.
    pub fn refused(&self) -> Vec<(String, String)> {
        self.current().refused.clone()
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Scorer for Installed {
    fn score(&self, f: &RequestFeatures) -> u32 {
        let loaded = self.current();
        let mut best = RuleScorer.score(f);
        if loaded.entries.iter().any(|e| e.info.scores_requests) {
            let record = Request {
                rate_per_min: f.rate_per_min,
                breadth_per_hour: f.breadth_per_hour,
                history: f.history,
                token_age_s: f.token_age_s,
                hour: f.hour,
                purpose: f.purpose.clone(),
            }
            .to_record();
            for e in loaded.entries.iter().filter(|e| e.info.scores_requests) {
                let s = e.detector.score(&record);
                best = best.max(calibrate(
                    s,
                    e.detector.thresholds.operating,
                    self.threshold_ppm,
                ));
            }
        }
        best.min(1_000_000)
    }
}

/// Verifies `bytes` as a rule (and against the registered hash `expected`, when given) and
/// installs it in `dir` as `<hash>.rule`, replacing older versions of the same name by the
/// same publisher. Nothing is written unless it verifies.
pub fn install(
    dir: &Path,
    bytes: &[u8],
    expected: Option<Hash>,
) -> Result<(Hash, SecurityRule), InstallError> {
    let rule = SecurityRule::from_bytes(bytes)?;
    let hash = rule.hash();
    if let Some(expected) = expected
        && expected != hash
    {
        return Err(InstallError::Mismatch {
            expected,
            found: hash,
        });
    }
    std::fs::create_dir_all(dir)?;
    let mut older = Vec::new();
    for (name, _, _) in fingerprint(dir) {
        if !name.ends_with(".rule") {
            continue;
        }
        // A file that does not read as a rule is not loaded either; it cannot block this one.
        let Some(other) = std::fs::read(dir.join(&name))
            .ok()
            .and_then(|b| SecurityRule::from_bytes(&b).ok())
        else {
            continue;
        };
        if other.meta.publisher == rule.meta.publisher && other.meta.name == rule.meta.name {
            if other.meta.version >= rule.meta.version {
                return Err(InstallError::NotNewer {
                    name: rule.meta.name.clone(),
                    installed: other.meta.version,
                    offered: rule.meta.version,
                });
            }
            older.push(name);
        }
    }
    let target = dir.join(format!("{hash}.rule"));
    let tmp = dir.join(format!(".{hash}.tmp"));
    std::fs::write(&tmp, rule.bytes())?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &target)?;
    for name in older {
        std::fs::remove_file(dir.join(name))?;
    }
    Ok((hash, rule))
}
