//! What every node serves from, single node and validator alike: the durable ledger and the
//! mempool, behind one lock order — ledger, then mempool, never the reverse.

use crate::backend::{NodeError, TxStatus};
use crate::mempool::{AdmitError, Mempool};
use secnet_ledger::Ledger;
use secnet_types::{Hash, SignedTransaction};
use std::sync::{Mutex, MutexGuard};
use tokio::sync::watch;

/// A node's ledger and mempool.
#[derive(Debug)]
pub struct LedgerCore {
    ledger: Mutex<Ledger>,
    mempool: Mutex<Mempool>,
    /// The height of the last block applied, for those waiting for the next one.
    applied: watch::Sender<u64>,
}

fn lock<T>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>, NodeError> {
    m.lock().map_err(|_| NodeError::Poisoned)
}

impl LedgerCore {
    /// Wraps an opened ledger with an empty mempool of `mempool_capacity` transactions.
    pub fn new(ledger: Ledger, mempool_capacity: usize) -> LedgerCore {
        LedgerCore {
            applied: watch::Sender::new(ledger.state().tip().height),
            ledger: Mutex::new(ledger),
            mempool: Mutex::new(Mempool::new(mempool_capacity)),
        }
    }

    /// Tells those waiting for blocks that the ledger now holds `height`. Call it after
    /// releasing the ledger, which the woken take next.
    pub fn applied(&self, height: u64) {
        self.applied.send_if_modified(|last| {
            let higher = height > *last;
            if higher {
                *last = height;
            }
            higher
        });
    }

    /// The height of the last block applied, announced by [`LedgerCore::applied`], and its
    /// changes.
    pub fn applied_heights(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// The ledger, locked. Take the mempool only after it, if at all.
    ///
    /// Refused once a write of the ledger has failed: what it holds in memory may then never
    /// reach the disk, so nothing (a receipt, a balance) is served from it.
    pub fn ledger(&self) -> Result<MutexGuard<'_, Ledger>, NodeError> {
        let ledger = lock(&self.ledger)?;
        if ledger.is_poisoned() {
            return Err(NodeError::Ledger(secnet_ledger::LedgerError::Poisoned));
        }
        Ok(ledger)
    }

    /// The mempool, locked. Never hold it while taking the ledger.
    pub fn mempool(&self) -> Result<MutexGuard<'_, Mempool>, NodeError> {
        lock(&self.mempool)
    }

    /// Runs `f` with the ledger locked.
    pub fn with_ledger<R>(&self, f: impl FnOnce(&Ledger) -> R) -> Result<R, NodeError> {
        Ok(f(&*self.ledger()?))
    }

    /// Admits transactions, checking their signatures as one batch before taking any lock;
    /// only the nonce and duplicate checks run under the locks. One result per transaction.
    pub fn admit(
        &self,
        txs: Vec<SignedTransaction>,
    ) -> Result<Vec<Result<Hash, AdmitError>>, NodeError> {
        let valid = secnet_types::verify_signatures(&txs);
        self.admit_checked(txs, &valid)
    }

    /// [`Self::admit`] for transactions whose signatures the caller checked: `valid` must be
    /// what [`secnet_types::verify_signatures`] gave for exactly these transactions (one
    /// missing counts as not verifying).
    pub fn admit_checked(
        &self,
        txs: Vec<SignedTransaction>,
        valid: &[bool],
    ) -> Result<Vec<Result<Hash, AdmitError>>, NodeError> {
        debug_assert_eq!(
            valid.len(),
            txs.len(),
            "one signature check per transaction"
        );
        let ledger = self.ledger()?;
        let mut pool = self.mempool()?;
        Ok(txs
            .into_iter()
            .zip(valid.iter().copied().chain(std::iter::repeat(false)))
            .map(|(tx, ok)| pool.admit_checked(tx, ledger.state(), ok))
            .collect())
    }

    /// Admits one transaction (see [`Self::admit`]).
    pub fn admit_one(&self, tx: SignedTransaction) -> Result<Result<Hash, AdmitError>, NodeError> {
        self.admit(vec![tx])?.pop().ok_or(NodeError::Poisoned)
    }

    /// Where a transaction is.
    pub fn tx_status(&self, hash: &Hash) -> Result<TxStatus, NodeError> {
        if self.mempool()?.contains(hash) {
            return Ok(TxStatus::Pending);
        }
        let found = self.ledger()?.committed_receipt(hash)?;
        Ok(TxStatus::from_committed(found))
    }

    /// Whether `hash` is pending.
    pub fn is_pending(&self, hash: &Hash) -> Result<bool, NodeError> {
        Ok(self.mempool()?.contains(hash))
    }

    /// Number of pending transactions.
    pub fn pending(&self) -> Result<usize, NodeError> {
        Ok(self.mempool()?.len())
    }

    /// Up to `max` pending transactions for a block, skipping those `skip` names.
    pub fn select(
        &self,
        max: usize,
        skip: impl Fn(&Hash) -> bool,
    ) -> Result<Vec<SignedTransaction>, NodeError> {
        Ok(self.mempool()?.select(max, skip))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;
    use crate::datadir::DataDir;
    use secnet_ledger::LedgerError;

    #[test]
    fn a_ledger_whose_write_failed_serves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (genesis, key) = DataDir::new(dir.path()).open_dev(&[]).unwrap();
        let core = LedgerCore::new(Ledger::open(dir.path(), &genesis).unwrap(), 16);
        assert!(core.with_ledger(|l| l.state().tip().height).is_ok());
        core.ledger().unwrap().poison();
        assert!(matches!(
            core.ledger(),
            Err(NodeError::Ledger(LedgerError::Poisoned))
        ));
        // Neither a receipt, nor a balance, nor admission.
        assert!(core.tx_status(&Hash::digest(b"any")).is_err());
        assert!(core.with_ledger(|l| l.state().tip().height).is_err());
        let tx = secnet_types::Transaction {
            chain_id: genesis.chain_id.clone(),
            sender: key.account(),
            nonce: 0,
            call: secnet_types::tx::Call::Transfer {
                to: key.account(),
                amount: 1,
            },
        }
        .sign(&key);
        assert!(core.admit_one(tx).is_err());
    }
}
