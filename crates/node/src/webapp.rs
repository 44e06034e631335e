//! The browser application's view of this node (`secnet_web::Services`): listings, accounts
//! and organisations from the ledger and the genesis, patients' records, policies and
//! histories from the PDC, and reading registered data as this node through the same
//! verifying client any consumer uses.

use crate::backend::Backend;
use crate::pdc::Pdc;
use secnet_api::pdc::{AccessAsk, AskRecord, Notice};
use secnet_api::txs::TxStatus;
use secnet_contract::StateSnapshot;
use secnet_types::{AccountId, Call, Event, Genesis, Hash, Outcome};
use secnet_web::services::{
    AccountFacts, BoxFuture, EmergencyReading, HistoryItem, Listings, Organisation, ReadError,
    Reading, Services, StoredRecord,
};
use std::collections::BTreeSet;
use std::io::Read as _;
use std::sync::Arc;
use std::time::Duration;

/// Largest object shown in a page.
const MAX_SHOWN_OBJECT: u64 = 4 * 1024 * 1024;

/// How many listings' hashes the application takes under the ledger at a time.
const LISTINGS_READ_AT_ONCE: usize = 1_024;

/// Most bytes of a patient's records read for one page.
const MAX_SHOWN_TOTAL: u64 = 64 * 1024 * 1024;
/// Most resources read for one page.
const MAX_SHOWN_OBJECTS: usize = 20_000;
/// How long a grant a reader asks for lasts.
const READ_GRANT_SECS: u32 = 600;
/// How long a transaction of this node is waited for (a read waits for up to three, within
/// the API's 30 s answer timeout).
const FINALITY_WAIT: Duration = Duration::from_secs(8);
/// Most a staff member's read may pay at once.
pub const MAX_READ_PRICE: u64 = 1_000;
/// Largest record read for a page.
const MAX_READ_BYTES: usize = 4 * 1024 * 1024;
/// Reads running at once.
const MAX_READS: usize = 2;

/// The node's side of the browser application.
pub struct WebServices {
    node: Arc<dyn Backend>,
    pdc: Arc<Pdc>,
    genesis: Genesis,
    reads: Arc<tokio::sync::Semaphore>,
    /// The listings as of a height, shared by every page until the next height.
    listed: std::sync::Mutex<(Option<u64>, Listings)>,
    /// Held while the listings are built, so that pages asking at once wait for one build
    /// and share it instead of each decoding every listing.
    building: std::sync::Mutex<()>,
}

impl std::fmt::Debug for WebServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebServices").finish_non_exhaustive()
    }
}

impl WebServices {
    /// The application's view of `node` and its `pdc`.
    pub fn new(node: Arc<dyn Backend>, pdc: Arc<Pdc>) -> Result<WebServices, String> {
        let genesis = node
            .with_ledger(|l| l.genesis().clone())
            .map_err(|e| e.to_string())?;
        Ok(WebServices {
            node,
            pdc,
            genesis,
            reads: Arc::new(tokio::sync::Semaphore::new(MAX_READS)),
            listed: std::sync::Mutex::new((None, Arc::default())),
            building: std::sync::Mutex::new(()),
        })
    }

    /// How people see this node: its organisation's name in the genesis, or its account's
    /// first eight hex digits.
    pub fn node_name(&self) -> String {
        name_in(&self.genesis, &self.node.key().account())
    }

    async fn final_receipt(&self, hash: Hash) -> Result<(u64, Outcome), ReadError> {
        let deadline = tokio::time::Instant::now() + FINALITY_WAIT;
        loop {
            match self.node.tx_status(&hash) {
                Ok(TxStatus::Committed {
                    height, receipt, ..
                }) => return Ok((height, receipt.outcome)),
                Ok(TxStatus::Unknown) => {
                    return Err(ReadError::Failed(format!(
                        "transaction {hash} left the mempool without a block; try again"
                    )));
                }
                Ok(TxStatus::Pending) => {}
                Err(e) => return Err(ReadError::Failed(e.to_string())),
            }
            if tokio::time::Instant::now() > deadline {
                return Err(ReadError::Failed(format!(
                    "transaction {hash} was not final within {} s",
                    FINALITY_WAIT.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn transact(&self, call: Call) -> Result<(u64, Vec<Event>), ReadError> {
        let (node, pdc) = (self.node.clone(), self.pdc.clone());
        let hash = tokio::task::spawn_blocking(move || pdc.submit_own(&*node, call))
            .await
            .map_err(|e| ReadError::Failed(e.to_string()))?
            .map_err(ReadError::Failed)?;
        match self.final_receipt(hash).await? {
            (height, Outcome::Applied { events }) => Ok((height, events)),
            (_, Outcome::Rejected { rejection }) => Err(ReadError::Refused {
                steps: Vec::new(),
                reason: format!("the ledger refused: {rejection}"),
            }),
        }
    }

    async fn read_listed(
        &self,
        data: Hash,
        purpose: String,
        price: u64,
    ) -> Result<Reading, ReadError> {
        let Ok(_permit) = self.reads.clone().try_acquire_owned() else {
            return Err(ReadError::Failed(
                "the node is reading other records; try again in a moment".into(),
            ));
        };
        let me = self.node.key().account();
        let (listing, subscribed, has_key) = self
            .node
            .with_ledger(|l| {
                let listing = l.state().listing(&data);
                let subscribed = listing
                    .as_ref()
                    .is_some_and(|x| l.state().is_subscribed_to(x, &me));
                (
                    listing,
                    subscribed,
                    l.state().account(&me).encryption_key.is_some(),
                )
            })
            .map_err(|e| ReadError::Failed(e.to_string()))?;
        let Some(listing) = listing else {
            return Err(ReadError::Refused {
                steps: Vec::new(),
                reason: "this data is not registered (any more): its owner withdrew it".into(),
            });
        };
        let refuse = |reason: String| ReadError::Refused {
            steps: Vec::new(),
            reason,
        };
        if listing.price != price {
            return Err(refuse(format!(
                "the price is now {}, not the {price} you were shown: search again",
                listing.price
            )));
        }
        if listing.price > MAX_READ_PRICE {
            return Err(refuse(format!(
                "the price {} is above the {MAX_READ_PRICE} one read may pay",
                listing.price
            )));
        }
        let base = self.holder_url(&listing)?;
        let mut steps = Vec::new();
        let with_steps = |steps: &Vec<String>, e: ReadError| match e {
            ReadError::Refused { reason, .. } => ReadError::Refused {
                steps: steps.clone(),
                reason,
            },
            other => other,
        };
        if !has_key {
            // Data keys are sealed to the reader's registered encryption key.
            let (height, _) = self
                .transact(Call::SetEncryptionKey {
                    key: self.node.key().encryption_key(),
                })
                .await?;
            steps.push(format!(
                "registered this node's encryption key, which data keys are sealed to (final at height {height})"
            ));
        }
        if subscribed {
            steps.push("already subscribed to this registration: nothing paid".to_string());
        } else {
            let (height, _) = self
                .transact(Call::SubscribeData { hash: data })
                .await
                .map_err(|e| with_steps(&steps, e))?;
            steps.push(format!(
                "paid {} for a subscription (final at height {height}): {}% to the holder, the rest to the patient",
                listing.price,
                listing.holder_share_bps / 100
            ));
        }
        let (height, events) = self
            .transact(Call::RequestDataWithHash {
                hash: data,
                purpose: purpose.clone(),
                ttl_secs: READ_GRANT_SECS,
            })
            .await
            .map_err(|e| with_steps(&steps, e))?;
        let Some((grant, _)) = Event::issued_grant(&events) else {
            return Err(ReadError::Failed(
                "the request was applied without issuing a grant".into(),
            ));
        };
        steps.push(format!(
            "granted by the ledger for {purpose} for {} minutes (final at height {height})",
            READ_GRANT_SECS / 60
        ));
        let remote = secnet_client::RemoteNode::new(&base, &self.genesis)
            .map_err(|e| ReadError::Failed(e.to_string()))?
            .with_max_fetch(MAX_READ_BYTES);
        let delivery = match remote.fetch(self.node.key(), &grant).await {
            Ok(d) => d,
            Err(e) => {
                return Err(match read_error(e) {
                    ReadError::Refused { reason, .. } => ReadError::Refused { steps, reason },
                    failed => failed,
                });
            }
        };
        let content = delivery
            .plaintext()
            .map_err(|e| ReadError::Failed(e.to_string()))?;
        steps.push(format!(
            "fetched from the holder ({} bytes), decrypted here, and checked against the registered hash; the holder records the delivery on the ledger",
            content.len()
        ));
        Ok(Reading {
            data,
            holder: listing.holder,
            steps,
            content,
        })
    }
}

impl WebServices {
    /// The listing of `data` and a client of the node holding it; `gone` says why there is
    /// none when the listing is no longer registered.
    fn holder_of(
        &self,
        data: &Hash,
        gone: &str,
    ) -> Result<(secnet_contract::entries::Listing, secnet_client::RemoteNode), ReadError> {
        let listing = self
            .node
            .with_ledger(|l| l.state().listing(data))
            .map_err(|e| ReadError::Failed(storage_failure("read the ledger", e)))?
            .ok_or_else(|| ReadError::Refused {
                steps: Vec::new(),
                reason: gone.to_string(),
            })?;
        let remote = secnet_client::RemoteNode::for_holder(
            &self.holder_url(&listing)?,
            &self.genesis,
            listing.holder,
        )
        .map_err(|e| ReadError::Failed(e.to_string()))?;
        Ok((listing, remote))
    }

    /// Sends `ask` to the node holding its listing, signed as this node.
    async fn ask_holder(&self, ask: AccessAsk) -> Result<AskRecord, ReadError> {
        let (listing, remote) = self.holder_of(
            &ask.data,
            "this data is not registered (any more): its owner withdrew it",
        )?;
        remote
            .api()
            .ask(self.node.key(), &listing.owner, &ask)
            .await
            .map_err(read_error)
    }

    /// Where the holder of `listing` serves it: only data held by an organisation of the
    /// network, at that organisation's host.
    fn holder_url(&self, listing: &secnet_contract::entries::Listing) -> Result<String, ReadError> {
        holder_base(&listing.address)
            .filter(|base| self.is_hosts_address(&listing.holder, base))
            .ok_or_else(|| ReadError::Refused {
                steps: Vec::new(),
                reason: format!(
                    "the registration's address {:?} is not the data URL of its holder, an organisation of this network",
                    listing.address
                ),
            })
    }

    /// Whether `base` is on the host of `holder`, a validator of the genesis.
    fn is_hosts_address(&self, holder: &AccountId, base: &str) -> bool {
        let Some(v) = self.genesis.validators.iter().find(|v| v.key == *holder) else {
            return false;
        };
        let host_of = |hostport: &str| {
            hostport
                .rsplit_once(':')
                .map_or(hostport, |(h, _)| h)
                .to_string()
        };
        let url_host = base.split_once("://").map(|(_, h)| host_of(h));
        // A single node's genesis names no address: its own host is all there is.
        v.address.is_empty() || url_host.is_some_and(|h| h == host_of(&v.address))
    }
}

/// What a person is told when this node's own storage fails: the cause, which can name the
/// node's files, goes to the node's log and not to the page.
fn storage_failure(what: &str, e: impl std::fmt::Display) -> String {
    tracing::error!(error = %e, "the application could not {what}");
    format!("this node could not {what}; its operator will find the cause in the node's log")
}

/// The FHIR resources `owner` stores in `pdc`, decrypted, within the page's budget.
fn records_of(pdc: &Pdc, owner: &AccountId) -> Result<Vec<StoredRecord>, String> {
    let store = pdc.store();
    let mut out = Vec::new();
    let mut budget = MAX_SHOWN_TOTAL;
    for object in store
        .objects_of(owner)
        .map_err(|e| storage_failure("read the stored records", e))?
    {
        if !object.object.starts_with("fhir/") {
            continue;
        }
        let Some(version) = object.latest().filter(|v| v.size <= MAX_SHOWN_OBJECT) else {
            continue;
        };
        if out.len() >= MAX_SHOWN_OBJECTS || version.size > budget {
            break;
        }
        budget -= version.size;
        let mut content = Vec::new();
        store
            .read(version)
            .map_err(|e| storage_failure("read the stored records", e))?
            .take(MAX_SHOWN_OBJECT)
            .read_to_end(&mut content)
            .map_err(|e| storage_failure("read the stored records", e))?;
        out.push(StoredRecord {
            path: object.object.clone(),
            content,
        });
    }
    Ok(out)
}

/// The holder's base URL in a registered data address (`<base>/v1/pdc/data/<hash>`); only
/// http(s) URLs of that shape are followed.
fn holder_base(address: &str) -> Option<String> {
    let (base, rest) = address.split_once("/v1/pdc/data/")?;
    let host = base.split_once("://")?.1;
    // Signed requests go in the clear only to this machine.
    let loopback = host
        .rsplit_once(':')
        .map_or(host, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let loopback = loopback == "localhost"
        || loopback
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let scheme_ok = base.starts_with("https://") || (base.starts_with("http://") && loopback);
    (scheme_ok
        && !host.is_empty()
        && !host.contains(['/', '?', '#', '@'])
        && rest.len() == 64
        && rest.bytes().all(|b| b.is_ascii_hexdigit()))
    .then(|| base.to_string())
}

/// The name of `account` in `genesis`: its validator's name, or `node <prefix>`.
pub fn name_in(genesis: &Genesis, account: &AccountId) -> String {
    genesis
        .validators
        .iter()
        .find(|v| v.key == *account && !v.name.is_empty())
        .map(|v| v.name.clone())
        .unwrap_or_else(|| crate::api::node_name(account))
}

/// What the application lists of the listing registered under `hash` in `snapshot`: patient
/// data only.
fn listed_of(snapshot: &StateSnapshot, hash: &Hash) -> Option<secnet_web::search::Listed> {
    snapshot
        .listing(hash)
        .filter(|x| x.kind == secnet_types::DataKind::UserData)
        .map(|x| secnet_web::search::Listed {
            id: x.id.to_string(),
            hash: x.hash.to_string(),
            holder: x.holder.to_string(),
            owner: x.owner.to_string(),
            price: x.price,
            description: x.description,
        })
}

/// `old` (in content-hash order) with the listings under `changed` read again with
/// `listed` (gone where it gives none), still in content-hash order: what reading every
/// listing again would give, when `changed` names every listing written since `old`. The
/// others are shared, not copied.
fn updated_listings(
    old: &[Arc<secnet_web::search::Listed>],
    changed: &BTreeSet<Hash>,
    listed: impl Fn(&Hash) -> Option<secnet_web::search::Listed>,
) -> Vec<Arc<secnet_web::search::Listed>> {
    let names: BTreeSet<String> = changed.iter().map(ToString::to_string).collect();
    let mut fresh: Vec<_> = old
        .iter()
        .filter(|l| !names.contains(&l.hash))
        .cloned()
        .collect();
    fresh.extend(changed.iter().filter_map(listed).map(Arc::new));
    // Two sorted runs (hex of equal length sorts as the bytes do): merged in one pass.
    fresh.sort_by(|a, b| a.hash.cmp(&b.hash));
    fresh
}

impl WebServices {
    /// Every listing, read a page of hashes at a time; `None` if the ledger cannot be read.
    fn all_listings(&self) -> Option<Vec<Arc<secnet_web::search::Listed>>> {
        let mut all = Vec::new();
        let mut after: Option<Hash> = None;
        loop {
            let page = self.node.with_ledger(|l| {
                l.listed_hashes_after(after.as_ref(), LISTINGS_READ_AT_ONCE)
                    .map(|hashes| (l.state().snapshot(), hashes))
            });
            let Ok(Ok((snapshot, hashes))) = page else {
                return None;
            };
            after = hashes.last().copied();
            all.extend(
                hashes
                    .iter()
                    .filter_map(|h| listed_of(&snapshot, h))
                    .map(Arc::new),
            );
            if hashes.len() < LISTINGS_READ_AT_ONCE {
                return Some(all);
            }
        }
    }
}

impl Services for WebServices {
    fn me(&self) -> AccountId {
        self.node.key().account()
    }

    fn chain_id(&self) -> String {
        self.genesis.chain_id.clone()
    }

    fn listings(&self) -> Listings {
        let cache = || {
            self.listed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        // Listings change only with a new height: brought up to date once per height,
        // shared, one update at a time (a page asking meanwhile waits for it, then finds it
        // fresh). When the ledger can name the listings the blocks since the cached height
        // wrote, only those are read again; otherwise all are, a page of hashes at a time.
        // Under the ledger only the state tree (an O(1) version) and hashes are taken, and
        // listings are decoded after it is let go, so that blocks are not held up for long
        // however many listings there are.
        let _building = self
            .building
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let cached = cache().0;
        let since = self.node.with_ledger(|l| {
            let tip = l.state().tip().height;
            let changed = cached.and_then(|at| l.listings_changed_since(at));
            (
                tip,
                changed.map(|(_, changed)| (l.state().snapshot(), changed)),
            )
        });
        let Ok((height, changed)) = since else {
            return cache().1.clone();
        };
        if cached == Some(height) {
            return cache().1.clone();
        }
        let fresh = match changed {
            Some((snapshot, changed)) => {
                let changed: BTreeSet<Hash> =
                    changed.iter().flat_map(|h| h.iter().copied()).collect();
                let old = cache().1.clone();
                if changed.is_empty() {
                    // Blocks that wrote no listing: the same list, shared.
                    old
                } else {
                    let listed = |hash: &Hash| listed_of(&snapshot, hash);
                    Arc::new(updated_listings(&old, &changed, listed))
                }
            }
            None => match self.all_listings() {
                Some(all) => Arc::new(all),
                None => return cache().1.clone(),
            },
        };
        let mut cached = cache();
        if cached.0.is_none_or(|at| at <= height) {
            *cached = (Some(height), fresh.clone());
        }
        fresh
    }

    fn listing(&self, hash: &Hash) -> Option<Arc<secnet_web::search::Listed>> {
        // The state as of now (an O(1) version), decoded after the ledger is let go; among
        // the cached listings if the ledger cannot be read, as `listings` gives them then.
        match self.node.with_ledger(|l| l.state().snapshot()) {
            Ok(snapshot) => listed_of(&snapshot, hash).map(Arc::new),
            Err(_) => secnet_web::services::find_listing(&self.listings(), hash),
        }
    }

    fn validators(&self) -> Vec<(AccountId, String)> {
        self.genesis
            .validators
            .iter()
            .map(|v| (v.key, v.name.clone()))
            .collect()
    }

    fn organisations(&self) -> Vec<Organisation> {
        self.genesis
            .validators
            .iter()
            .map(|v| Organisation {
                account: v.key,
                name: name_in(&self.genesis, &v.key),
            })
            .collect()
    }

    fn account(&self, who: &AccountId) -> Result<AccountFacts, String> {
        self.node
            .with_ledger(|l| {
                let a = l.state().account(who);
                AccountFacts {
                    balance: a.balance,
                    nonce: a.nonce,
                    encryption_key: a.encryption_key.is_some(),
                }
            })
            .map_err(|e| storage_failure("read the ledger", e))
    }

    fn records(&self, owner: &AccountId) -> Result<Vec<StoredRecord>, String> {
        records_of(&self.pdc, owner)
    }

    fn policy(&self, owner: &AccountId) -> Result<String, String> {
        Ok(self
            .pdc
            .store()
            .policy(owner)
            .map_err(|e| storage_failure("read the policy", e))?
            .unwrap_or_default())
    }

    fn history(&self, owner: &AccountId) -> Result<Vec<HistoryItem>, String> {
        history_items(
            self.node
                .with_ledger(|l| self.pdc.history_of(l, owner))
                .map_err(|e| storage_failure("read the ledger", e))?,
        )
    }

    fn trail(&self, account: &AccountId, limit: usize) -> Result<Vec<HistoryItem>, String> {
        history_items(
            self.node
                .with_ledger(|l| self.pdc.trail_of(l, account, limit))
                .map_err(|e| storage_failure("read the ledger", e))?,
        )
    }

    fn asks(&self, owner: &AccountId) -> Result<Vec<AskRecord>, String> {
        self.pdc.asks_of(owner).map_err(|p| p.detail().to_string())
    }

    fn import_for(&self, owner: &AccountId, staff: &str, bundle: &[u8]) -> Result<String, String> {
        let imported = self
            .pdc
            .import_for(&*self.node, owner, staff, bundle)
            .map_err(|p| p.detail().to_string())?;
        Ok(format!(
            "{} records stored for {owner}: {}",
            imported.objects.len(),
            imported
                .counts
                .iter()
                .map(|(kind, n)| format!("{n} {kind}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }

    fn notices(&self, owner: &AccountId) -> Result<Vec<Notice>, String> {
        self.pdc
            .notices_of(owner)
            .map_err(|p| p.detail().to_string())
    }

    fn ask_status(
        &self,
        data: Hash,
        owner: AccountId,
        id: Hash,
    ) -> BoxFuture<'_, Result<AskRecord, ReadError>> {
        Box::pin(async move {
            let (_, remote) = self.holder_of(
                &data,
                "the record was withdrawn: its holder is no longer named on the ledger",
            )?;
            remote
                .api()
                .ask_status(self.node.key(), &owner, &id)
                .await
                .map_err(read_error)
        })
    }

    fn ask(&self, ask: AccessAsk) -> BoxFuture<'_, Result<AskRecord, ReadError>> {
        Box::pin(self.ask_holder(ask))
    }

    fn read(
        &self,
        data: Hash,
        purpose: String,
        price: u64,
    ) -> BoxFuture<'_, Result<Reading, ReadError>> {
        Box::pin(self.read_listed(data, purpose, price))
    }

    fn break_glass(
        &self,
        owner: AccountId,
        reason: String,
    ) -> BoxFuture<'_, Result<EmergencyReading, ReadError>> {
        Box::pin(async move {
            let holds = {
                let (pdc, o) = (self.pdc.clone(), owner);
                tokio::task::spawn_blocking(move || {
                    pdc.store()
                        .objects_of(&o)
                        .map(|objects| objects.iter().any(|x| x.object.starts_with("fhir/")))
                })
                .await
                .map_err(|e| ReadError::Failed(e.to_string()))?
                .map_err(|e| ReadError::Failed(storage_failure("read the stored records", e)))?
            };
            if !holds {
                return Err(ReadError::Refused {
                    steps: Vec::new(),
                    reason: format!("this node holds no records of {owner}"),
                });
            }
            // Recorded first: nothing is read unless the ledger has the record of it.
            let (height, _) = self.transact(Call::BreakGlass { owner, reason }).await?;
            let pdc = self.pdc.clone();
            let records = tokio::task::spawn_blocking(move || records_of(&pdc, &owner))
                .await
                .map_err(|e| ReadError::Failed(e.to_string()))?
                .map_err(ReadError::Failed)?;
            Ok(EmergencyReading { height, records })
        })
    }
}

/// A holder's refusal as a refusal to read; anything else as a failure.
fn read_error(e: secnet_client::ClientError) -> ReadError {
    match e {
        secnet_client::ClientError::Refused(reason) => ReadError::Refused {
            steps: Vec::new(),
            reason,
        },
        other => ReadError::Failed(other.to_string()),
    }
}

/// Log entries as the application shows them, or what went wrong.
fn history_items(
    found: Result<Vec<(u64, secnet_contract::LogEntry, u64)>, crate::problem::Problem>,
) -> Result<Vec<HistoryItem>, String> {
    found.map_err(|p| p.detail().to_string()).map(|items| {
        items
            .into_iter()
            .map(|(index, entry, block_ms)| HistoryItem {
                index,
                entry,
                block_ms,
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::{holder_base, updated_listings};
    use proptest::prelude::*;
    use secnet_types::Hash;
    use secnet_web::search::Listed;
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;

    /// Listings as the ledger holds them at two heights: content hash (from a small number)
    /// → price, absent when not listed.
    fn listings(model: &BTreeMap<u8, u64>) -> Vec<Arc<Listed>> {
        let mut all: Vec<Arc<Listed>> = model
            .iter()
            .map(|(n, price)| Arc::new(listed(*n, *price)))
            .collect();
        all.sort_by(|a, b| a.hash.cmp(&b.hash));
        all
    }

    fn hash(n: u8) -> Hash {
        Hash::digest_parts(&[b"listing", &[n]])
    }

    fn listed(n: u8, price: u64) -> Listed {
        Listed {
            id: format!("id{n}"),
            hash: hash(n).to_string(),
            holder: "h".into(),
            owner: "o".into(),
            price,
            description: format!("record {n}"),
        }
    }

    proptest! {
        /// Reading again only what changed (and anything else named) gives what reading
        /// everything gives, in the same order.
        #[test]
        fn updating_what_changed_is_reading_everything(
            before in prop::collection::btree_map(any::<u8>(), 0..3u64, 0..40),
            after in prop::collection::btree_map(any::<u8>(), 0..3u64, 0..40),
            named in prop::collection::btree_set(any::<u8>(), 0..10),
        ) {
            let changed: BTreeSet<Hash> = (0..=u8::MAX)
                .filter(|n| before.get(n) != after.get(n) || named.contains(n))
                .map(hash)
                .collect();
            let read = |h: &Hash| {
                (0..=u8::MAX)
                    .find(|n| hash(*n) == *h)
                    .and_then(|n| after.get(&n).map(|price| listed(n, *price)))
            };
            let updated = updated_listings(&listings(&before), &changed, read);
            prop_assert_eq!(updated, listings(&after));
        }
    }

    #[test]
    fn only_holder_data_urls_are_followed() {
        let h = "ab".repeat(32);
        assert_eq!(
            holder_base(&format!("http://127.0.0.1:8100/v1/pdc/data/{h}")).as_deref(),
            Some("http://127.0.0.1:8100")
        );
        assert_eq!(
            holder_base(&format!("https://hospital.example:8100/v1/pdc/data/{h}")).as_deref(),
            Some("https://hospital.example:8100")
        );
        for bad in [
            // Signed requests in the clear, off this machine.
            format!("http://hospital.example:8100/v1/pdc/data/{h}"),
            format!("http://10.0.0.5:8100/v1/pdc/data/{h}"),
            format!("file:///etc/v1/pdc/data/{h}"),
            format!("http://user@host/v1/pdc/data/{h}"),
            "http://host/v1/pdc/data/xyz".to_string(),
            format!("http:///v1/pdc/data/{h}"),
            format!("http://host/x/v1/pdc/data/{h}"),
            "secnet://x".to_string(),
        ] {
            assert_eq!(holder_base(&bad), None, "{bad}");
        }
    }
}
