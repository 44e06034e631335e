//! Applying blocks: header checks, signature checks, then each transaction in order.
//!
//! Each handler validates everything before it writes anything, so a rejected transaction
//! leaves the state as it was (apart from the sender's nonce, which a correctly signed
//! transaction for this chain always consumes).

use crate::entries::{AccessGrant, Account, Listing, StateKey, StateValue, Subscription};
use crate::log_entry::LogEntry;
use crate::state::{ChainTip, State};
use secnet_merkle::log::{Subtree, leaf_hash};
use secnet_types::limits::{
    BASIS_POINTS, EXPIRED_GRANT_RETENTION_MS, MAX_ACCESS_ENTRIES, MAX_ADDRESS, MAX_BLOCK_TXS,
    MAX_CATEGORY, MAX_DESCRIPTION, MAX_GRANT_TTL_SECS, MAX_GRANTS_RETIRED_PER_BLOCK, MAX_PURPOSE,
    MAX_SCORE_PPM,
};
use secnet_types::{
    AccessEntry, AccountId, Block, BlockError, Call, DataKind, Event, Hash, Outcome, Receipt,
    RegisterData, Rejection, SignedTransaction, verify_signatures_except,
};
use std::sync::Arc;

/// A block that cannot be applied at all; the state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockRejected {
    /// Not the next height.
    #[error("block height {got} is not the next height {expected}")]
    WrongHeight {
        /// The next height.
        expected: u64,
        /// The block's height.
        got: u64,
    },
    /// Not built on the last applied block.
    #[error("block's parent {got} is not the last applied block {expected}")]
    WrongParent {
        /// The last applied block.
        expected: Hash,
        /// The block's parent.
        got: Hash,
    },
    /// Timestamp earlier than the parent's.
    #[error("block time {got} ms is before its parent's {parent} ms")]
    TimeRegressed {
        /// The parent's timestamp.
        parent: u64,
        /// The block's timestamp.
        got: u64,
    },
    /// More transactions than a block may hold.
    #[error("block has {got} transactions, more than the limit of {max}")]
    TooManyTxs {
        /// Transactions in the block.
        got: usize,
        /// The limit.
        max: usize,
    },
    /// The body does not match the header.
    #[error(transparent)]
    Body(#[from] BlockError),
}

/// One state change to persist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateWrite {
    /// Key bytes ([`StateKey::to_bytes`]).
    pub key: Vec<u8>,
    /// New value bytes ([`StateValue::to_bytes`]), shared with the state tree's leaf, or
    /// `None` if the entry was removed.
    pub value: Option<Arc<[u8]>>,
}

/// What applying a block produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockOutcome {
    /// The new tip (height, hash, time, state root).
    pub tip: ChainTip,
    /// One receipt per transaction, in order.
    pub receipts: Vec<Receipt>,
    /// Every changed entry, sorted by key, each once.
    pub writes: Vec<StateWrite>,
    /// Leaf bytes appended to the access log, in order.
    pub log_leaves: Vec<Vec<u8>>,
    /// Index of the first appended leaf.
    pub first_log_index: u64,
    /// The log's interior subtrees the appended leaves completed, in the order they were
    /// completed: with the leaves, what a store keeps to prove any leaf later (the state
    /// holds only the log's right edge).
    pub log_subtrees: Vec<Subtree>,
}

struct BlockCtx {
    height: u64,
    timestamp_ms: u64,
}

/// Collects what a block changes.
#[derive(Default)]
struct Changes {
    touched: Vec<StateKey>,
    log_leaves: Vec<Vec<u8>>,
    log_subtrees: Vec<Subtree>,
}

impl Changes {
    fn touch(&mut self, key: StateKey) {
        self.touched.push(key);
    }
}

impl State {
    /// Applies `block` on top of the current tip.
    ///
    /// On `Err` nothing changed. On `Ok` the state is at the block's height, and the outcome
    /// lists exactly the entries to persist.
    pub fn apply_block(&mut self, block: &Block) -> Result<BlockOutcome, BlockRejected> {
        self.apply_block_trusting(block, |_| false)
    }

    /// Like [`Self::apply_block`], but does not re-check the signatures of transactions for
    /// which `verified` is true: the caller checked them before (at admission or when it
    /// verified the proposal). The result is the same as `apply_block` for honest callers.
    pub fn apply_block_trusting(
        &mut self,
        block: &Block,
        verified: impl Fn(&SignedTransaction) -> bool,
    ) -> Result<BlockOutcome, BlockRejected> {
        let expected = self.tip.height + 1;
        if block.header.height != expected {
            return Err(BlockRejected::WrongHeight {
                expected,
                got: block.header.height,
            });
        }
        if block.header.parent != self.tip.block_hash {
            return Err(BlockRejected::WrongParent {
                expected: self.tip.block_hash,
                got: block.header.parent,
            });
        }
        if block.header.timestamp_ms < self.tip.timestamp_ms {
            return Err(BlockRejected::TimeRegressed {
                parent: self.tip.timestamp_ms,
                got: block.header.timestamp_ms,
            });
        }
        if block.txs.len() > MAX_BLOCK_TXS {
            return Err(BlockRejected::TooManyTxs {
                got: block.txs.len(),
                max: MAX_BLOCK_TXS,
            });
        }
        block.check_body()?;

        let ctx = BlockCtx {
            height: block.header.height,
            timestamp_ms: block.header.timestamp_ms,
        };
        let signatures = verify_signatures_except(&block.txs, verified);
        let first_log_index = self.log.len();
        let mut changes = Changes::default();
        self.retire_expired_grants(ctx.timestamp_ms);
        let receipts: Vec<Receipt> = block
            .txs
            .iter()
            .zip(signatures)
            .map(|(stx, sig_ok)| self.execute(&ctx, stx, sig_ok, &mut changes))
            .collect();

        if !changes.log_leaves.is_empty() {
            changes.touch(StateKey::LogHead);
        }
        changes.touched.extend(self.staged.keys().cloned());
        changes.touched.sort();
        changes.touched.dedup();
        let mut writes = Vec::with_capacity(changes.touched.len());
        let mut tree_updates = Vec::with_capacity(changes.touched.len());
        let mut staged = std::mem::take(&mut self.staged);
        for key in changes.touched {
            let key_bytes = key.to_bytes();
            let value = match staged.remove(&key) {
                Some(staged) => staged,
                None => self.get(&key),
            }
            .map(|v| Arc::<[u8]>::from(v.to_bytes()));
            tree_updates.push((
                Hash::digest(&key_bytes).0,
                value.as_ref().map(|v| (Hash::digest(v).0, Arc::clone(v))),
            ));
            writes.push(StateWrite {
                key: key_bytes,
                value,
            });
        }
        self.tree.apply_with(tree_updates);
        self.tip = ChainTip {
            height: block.header.height,
            block_hash: block.hash(),
            timestamp_ms: block.header.timestamp_ms,
            state_root: Hash(self.tree.root()),
        };
        Ok(BlockOutcome {
            tip: self.tip,
            receipts,
            writes,
            log_leaves: changes.log_leaves,
            first_log_index,
            log_subtrees: changes.log_subtrees,
        })
    }

    fn execute(
        &mut self,
        ctx: &BlockCtx,
        stx: &SignedTransaction,
        sig_ok: bool,
        changes: &mut Changes,
    ) -> Receipt {
        let tx = stx.tx();
        let reject = |rejection| Receipt {
            tx: stx.hash(),
            outcome: Outcome::Rejected { rejection },
        };
        if tx.chain_id != self.chain_id {
            return reject(Rejection::WrongChain {
                expected: self.chain_id.clone(),
                got: tx.chain_id.clone(),
            });
        }
        if !sig_ok {
            return reject(Rejection::BadSignature);
        }
        let sender = tx.sender;
        // Looked up first: a refused transaction adds no account, not even in memory.
        let expected = self.accounts.get(&sender).map_or(0, |a| a.nonce);
        if tx.nonce != expected {
            return reject(Rejection::BadNonce {
                expected,
                got: tx.nonce,
            });
        }
        self.accounts.entry(sender).or_default().nonce += 1;
        changes.touch(StateKey::Account(sender));

        let result = match &tx.call {
            Call::Transfer { to, amount } => self.transfer(sender, *to, *amount, changes),
            Call::SetEncryptionKey { key } => {
                self.accounts.entry(sender).or_default().encryption_key = Some(*key);
                Ok(vec![Event::EncryptionKeySet])
            }
            Call::RegisterData(r) => self.register(ctx, stx.hash(), sender, r),
            Call::WithdrawData { hash } => self.withdraw(sender, *hash),
            Call::SubscribeData { hash } => self.subscribe(ctx, stx, *hash, changes),
            Call::RequestDataWithAddress {
                address,
                purpose,
                ttl_secs,
            } => match self.get(&StateKey::Address(address.clone())) {
                Some(StateValue::Address(hash)) => {
                    self.request(ctx, stx, hash, purpose, *ttl_secs, changes)
                }
                _ => Err(Rejection::UnknownAddress {
                    address: address.clone(),
                }),
            },
            Call::RequestDataWithHash {
                hash,
                purpose,
                ttl_secs,
            } => self.request(ctx, stx, *hash, purpose, *ttl_secs, changes),
            Call::RecordAccess { entries } => {
                self.record_access(ctx, stx, sender, entries, changes)
            }
            Call::BreakGlass { owner, reason } => {
                check_text("reason", reason, MAX_PURPOSE).map(|()| {
                    let first_index = self.log.len();
                    self.append_log(
                        LogEntry::Emergency {
                            height: ctx.height,
                            tx: stx.hash(),
                            requester: sender,
                            owner: *owner,
                            reason: reason.clone(),
                        },
                        changes,
                    );
                    vec![Event::Logged {
                        first_index,
                        count: 1,
                    }]
                })
            }
        };
        Receipt {
            tx: stx.hash(),
            outcome: match result {
                Ok(events) => Outcome::Applied { events },
                Err(rejection) => Outcome::Rejected { rejection },
            },
        }
    }

    /// Moves value along `legs` (payer, payee, amount) atomically: all balances are checked
    /// first, then all are written.
    fn pay(
        &mut self,
        legs: &[(AccountId, AccountId, u64)],
        changes: &mut Changes,
    ) -> Result<(), Rejection> {
        let mut balances: Vec<(AccountId, u64)> = Vec::with_capacity(legs.len() * 2);
        let mut balance_of =
            |id: AccountId, accounts: &std::collections::BTreeMap<AccountId, Account>| {
                if let Some(pos) = balances.iter().position(|(a, _)| *a == id) {
                    pos
                } else {
                    balances.push((id, accounts.get(&id).map_or(0, |a| a.balance)));
                    balances.len() - 1
                }
            };
        let mut plan: Vec<(usize, usize, u64)> = Vec::with_capacity(legs.len());
        for (from, to, amount) in legs {
            plan.push((
                balance_of(*from, &self.accounts),
                balance_of(*to, &self.accounts),
                *amount,
            ));
        }
        for (from, to, amount) in plan {
            let available = balances.get(from).map_or(0, |b| b.1);
            let after = available
                .checked_sub(amount)
                .ok_or(Rejection::InsufficientBalance {
                    needed: amount,
                    available,
                })?;
            if let Some(b) = balances.get_mut(from) {
                b.1 = after;
            }
            if let Some(b) = balances.get_mut(to) {
                b.1 = b.1.checked_add(amount).ok_or(Rejection::Overflow)?;
            }
        }
        for (id, balance) in balances {
            self.accounts.entry(id).or_default().balance = balance;
            changes.touch(StateKey::Account(id));
        }
        Ok(())
    }

    fn transfer(
        &mut self,
        from: AccountId,
        to: AccountId,
        amount: u64,
        changes: &mut Changes,
    ) -> Result<Vec<Event>, Rejection> {
        self.pay(&[(from, to, amount)], changes)?;
        Ok(vec![Event::Transfer { from, to, amount }])
    }

    fn register(
        &mut self,
        ctx: &BlockCtx,
        id: Hash,
        owner: AccountId,
        r: &RegisterData,
    ) -> Result<Vec<Event>, Rejection> {
        check_text("description", &r.description, MAX_DESCRIPTION)?;
        check_text("address", &r.address, MAX_ADDRESS)?;
        if let DataKind::SecurityRule { category } = &r.kind {
            check_text("category", category, MAX_CATEGORY)?;
        }
        if r.holder_share_bps > BASIS_POINTS {
            return Err(Rejection::InvalidShare {
                bps: r.holder_share_bps,
            });
        }
        if self.contains(&StateKey::Listing(r.hash)) {
            return Err(Rejection::AlreadyRegistered { hash: r.hash });
        }
        let address = StateKey::Address(r.address.clone());
        if self.contains(&address) {
            return Err(Rejection::AddressTaken {
                address: r.address.clone(),
            });
        }
        self.stage(
            StateKey::Listing(r.hash),
            Some(StateValue::Listing(Listing {
                id,
                hash: r.hash,
                owner,
                holder: r.holder,
                holder_share_bps: r.holder_share_bps,
                description: r.description.clone(),
                address: r.address.clone(),
                price: r.price,
                kind: r.kind.clone(),
                registered_at: ctx.height,
            })),
        );
        self.stage(address, Some(StateValue::Address(r.hash)));
        Ok(vec![Event::Registered { data: r.hash }])
    }

    fn withdraw(&mut self, sender: AccountId, hash: Hash) -> Result<Vec<Event>, Rejection> {
        let listing = self.listing(&hash).ok_or(Rejection::UnknownData { hash })?;
        if listing.owner != sender {
            return Err(Rejection::NotOwner { hash });
        }
        self.stage(StateKey::Listing(hash), None);
        self.stage(StateKey::Address(listing.address), None);
        Ok(vec![Event::Withdrawn { data: hash }])
    }

    fn subscribe(
        &mut self,
        ctx: &BlockCtx,
        stx: &SignedTransaction,
        hash: Hash,
        changes: &mut Changes,
    ) -> Result<Vec<Event>, Rejection> {
        let consumer = stx.tx().sender;
        let listing = self.listing(&hash).ok_or(Rejection::UnknownData { hash })?;
        if self.is_subscribed_to(&listing, &consumer) {
            return Err(Rejection::AlreadySubscribed { hash });
        }
        let price = listing.price;
        // INVARIANT: holder_share_bps <= 10_000 (checked at registration), so the holder's
        // amount never exceeds the price.
        let holder_amount = u64::try_from(
            u128::from(price) * u128::from(listing.holder_share_bps) / u128::from(BASIS_POINTS),
        )
        .map_err(|_| Rejection::Overflow)?;
        let owner_amount = price - holder_amount.min(price);
        let (holder, owner, listing_id) = (listing.holder, listing.owner, listing.id);
        let available = self.accounts.get(&consumer).map_or(0, |a| a.balance);
        if available < price {
            return Err(Rejection::InsufficientBalance {
                needed: price,
                available,
            });
        }
        // SC1: consumer pays the holder the whole price; SC2: the holder passes the owner's
        // share on. Both legs settle in this one step or not at all.
        self.pay(
            &[(consumer, holder, price), (holder, owner, owner_amount)],
            changes,
        )?;
        self.stage(
            StateKey::Subscription(hash, consumer),
            Some(StateValue::Subscription(Subscription {
                listing: listing_id,
                paid: price,
                height: ctx.height,
            })),
        );
        // The payment is logged too, so the owner's statement of rewards and the consumer's
        // audit come from the certified log rather than from blocks a node may have pruned.
        let first_index = self.log.len();
        self.append_log(
            LogEntry::Payment {
                height: ctx.height,
                tx: stx.hash(),
                data: hash,
                consumer,
                holder,
                holder_amount,
                owner,
                owner_amount,
            },
            changes,
        );
        Ok(vec![
            Event::Payment {
                data: hash,
                consumer,
                holder,
                holder_amount,
                owner,
                owner_amount,
            },
            Event::Logged {
                first_index,
                count: 1,
            },
        ])
    }

    fn request(
        &mut self,
        ctx: &BlockCtx,
        stx: &SignedTransaction,
        hash: Hash,
        purpose: &str,
        ttl_secs: u32,
        changes: &mut Changes,
    ) -> Result<Vec<Event>, Rejection> {
        let requester = stx.tx().sender;
        let listing = self.listing(&hash).ok_or(Rejection::UnknownData { hash })?;
        if !self.is_subscribed_to(&listing, &requester) {
            return Err(Rejection::NotSubscribed { hash });
        }
        check_text("purpose", purpose, MAX_PURPOSE)?;
        if ttl_secs == 0 || ttl_secs > MAX_GRANT_TTL_SECS {
            return Err(Rejection::TtlOutOfRange {
                ttl_secs,
                max: MAX_GRANT_TTL_SECS,
            });
        }
        let grant_id = stx.hash();
        let expires_at_ms = ctx.timestamp_ms.saturating_add(u64::from(ttl_secs) * 1000);
        let log_index = self.log.len();
        let entry = LogEntry::Grant {
            height: ctx.height,
            tx: stx.hash(),
            grant: grant_id,
            data: hash,
            requester,
            holder: listing.holder,
            purpose: purpose.to_string(),
            expires_at_ms,
        };
        let grant = AccessGrant {
            id: grant_id,
            data: hash,
            address: listing.address,
            requester,
            holder: listing.holder,
            purpose: purpose.to_string(),
            issued_at_ms: ctx.timestamp_ms,
            expires_at_ms,
            log_index,
        };
        let address = grant.address.clone();
        self.append_log(entry, changes);
        self.expiring.insert((expires_at_ms, grant_id));
        self.stage(StateKey::Grant(grant_id), Some(StateValue::Grant(grant)));
        Ok(vec![
            Event::GrantIssued {
                grant: grant_id,
                data: hash,
                address,
                expires_at_ms,
            },
            Event::Logged {
                first_index: log_index,
                count: 1,
            },
        ])
    }

    fn record_access(
        &mut self,
        ctx: &BlockCtx,
        stx: &SignedTransaction,
        holder: AccountId,
        entries: &[AccessEntry],
        changes: &mut Changes,
    ) -> Result<Vec<Event>, Rejection> {
        if entries.is_empty() {
            return Err(Rejection::EmptyField {
                field: "entries".into(),
            });
        }
        if entries.len() > MAX_ACCESS_ENTRIES {
            return Err(Rejection::FieldTooLong {
                field: "entries".into(),
                max: MAX_ACCESS_ENTRIES as u32,
            });
        }
        for e in entries {
            self.check_access_entry(holder, e)?;
        }
        let first_index = self.log.len();
        for e in entries {
            self.append_log(
                LogEntry::Access {
                    height: ctx.height,
                    tx: stx.hash(),
                    holder,
                    entry: e.clone(),
                },
                changes,
            );
        }
        Ok(vec![Event::Logged {
            first_index,
            count: entries.len() as u32,
        }])
    }

    /// Whether `holder` may record `e` in a `RecordAccess` now: the very check execution
    /// makes of each entry (a batch with one entry that fails it is rejected whole), so a
    /// holder can keep a bad entry from sinking good ones.
    pub fn check_access_entry(&self, holder: AccountId, e: &AccessEntry) -> Result<(), Rejection> {
        if e.score_ppm > MAX_SCORE_PPM {
            return Err(Rejection::ScoreOutOfRange {
                score_ppm: e.score_ppm,
            });
        }
        match &e.grant {
            Some(id) => {
                let grant = self
                    .grant(id)
                    .ok_or(Rejection::UnknownGrant { grant: *id })?;
                if grant.holder != holder {
                    return Err(Rejection::NotHolder { hash: grant.data });
                }
                if grant.data != e.data || grant.requester != e.requester {
                    return Err(Rejection::GrantMismatch { grant: *id });
                }
            }
            None => {
                let listing = self
                    .listing(&e.data)
                    .ok_or(Rejection::UnknownData { hash: e.data })?;
                if listing.holder != holder {
                    return Err(Rejection::NotHolder { hash: e.data });
                }
            }
        }
        Ok(())
    }

    /// Removes the grants that expired more than [`EXPIRED_GRANT_RETENTION_MS`] before
    /// `now_ms` (block time), oldest first and at most [`MAX_GRANTS_RETIRED_PER_BLOCK`] per
    /// block (grants made to expire together are retired over several blocks): they
    /// authorise nothing any more, and their issue stays in the access log. Kept that long so
    /// that a holder's late access records can still name them.
    fn retire_expired_grants(&mut self, now_ms: u64) {
        let Some(cutoff) = now_ms.checked_sub(EXPIRED_GRANT_RETENTION_MS) else {
            return;
        };
        for _ in 0..MAX_GRANTS_RETIRED_PER_BLOCK {
            let Some(&(expires_at_ms, id)) = self.expiring.first() else {
                break;
            };
            if expires_at_ms >= cutoff {
                break;
            }
            self.expiring.pop_first();
            self.stage(StateKey::Grant(id), None);
        }
    }

    fn append_log(&mut self, entry: LogEntry, changes: &mut Changes) {
        let bytes = entry.to_bytes();
        let subtrees = &mut changes.log_subtrees;
        self.log
            .append_hash_with(leaf_hash(&bytes), |node| subtrees.push(node));
        changes.log_leaves.push(bytes);
    }
}

fn check_text(field: &str, value: &str, max: usize) -> Result<(), Rejection> {
    if value.is_empty() {
        return Err(Rejection::EmptyField {
            field: field.to_string(),
        });
    }
    if value.len() > max {
        return Err(Rejection::FieldTooLong {
            field: field.to_string(),
            max: max as u32,
        });
    }
    Ok(())
}
