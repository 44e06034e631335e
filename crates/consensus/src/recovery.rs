//! A validator that starts without its consensus journal.
//!
//! Simplex remembers which votes a validator signed in its journal: after a crash it replays
//! them and never signs a second, different vote in the same view. A validator whose journal
//! is gone (its data directory was lost, or it joins again from a snapshot) has forgotten
//! them. Were it to notarize again in a view it already voted in (as that view's leader, say,
//! proposing a new block), its peers would hold two conflicting votes signed by it: they
//! would block it as an equivocator, and the vote would count towards two proposals.
//!
//! So such a validator first listens. For [`Recovery::listen`], and then until it has heard
//! `f + 1` peers, it signs only nullify votes (the signatures are deterministic: a repeat is
//! the same vote, never a conflicting one) and notes the views its peers vote in. Then it
//! withholds its notarize and finalize votes in every view up to one past the view its peers
//! had reached, the `f + 1`-th highest any of them reported (so that `f` Byzantine peers
//! announcing far-off views cannot silence it; one past because simplex may vote a view
//! ahead of its own). A view it voted in before it lost its journal is at most that, so it
//! never signs conflicting votes there; above it, it votes as usual. Views it sits out are
//! nullified by the others, as when a validator is down.
//!
//! A network started from genesis has no earlier votes: every validator listens once, the
//! first views pass as nullifications, and the first block follows.

use commonware_actor::{Feedback, Unreliable};
use commonware_codec::Read;
use commonware_consensus::Viewable;
use commonware_consensus::simplex::types::Vote;
use commonware_cryptography::{ed25519, sha256};
use commonware_p2p::{CheckedSender, LimitedSender, Receiver, Recipients};
use commonware_runtime::{Clock, IoBufs};
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use crate::application::Scheme;

type ConsensusVote = Vote<Scheme, sha256::Digest>;

/// What a validator without its journal learned while listening, shared by its vote
/// channel's sender and receiver.
#[derive(Debug)]
pub struct Recovery {
    until: SystemTime,
    /// Most validators that may be Byzantine.
    faults: usize,
    /// Peers it must hear before it decides: `f + 1` (at least one honest), or all of them
    /// in a network of fewer.
    needed: usize,
    /// The highest view each peer voted in while this validator listened.
    heard: Mutex<HashMap<ed25519::PublicKey, u64>>,
    /// Decided when listening ends: notarize and finalize votes up to this view are withheld.
    hold_through: OnceLock<u64>,
}

impl Recovery {
    /// Listens from `now` for `listen` in a network of `validators`.
    pub fn new(now: SystemTime, listen: Duration, validators: usize) -> Arc<Recovery> {
        let faults = validators.saturating_sub(1) / 3;
        Arc::new(Recovery {
            until: now + listen,
            faults,
            needed: (faults + 1).min(validators.saturating_sub(1)),
            heard: Mutex::new(HashMap::new()),
            hold_through: OnceLock::new(),
        })
    }

    /// How long a validator without its journal listens, given its leader timeout: long
    /// enough to hear a vote from every live peer even when the chain is idle (an idle view
    /// ends within a leader timeout).
    pub fn listen(leader_timeout: Duration) -> Duration {
        leader_timeout * 2
    }

    /// Whether it still listens at `now`: for the listening time, and then until it has
    /// heard enough peers. (Without them it could not make a quorum anyway: waiting costs no
    /// liveness, and silence never lifts the guard.)
    pub fn listening(&self, now: SystemTime) -> bool {
        if self.hold_through.get().is_some() {
            return false;
        }
        now < self.until || self.heard.lock().map_or(true, |h| h.len() < self.needed)
    }

    /// Notes that `peer` voted in `view` (while listening; later votes change nothing).
    pub fn heard(&self, now: SystemTime, peer: ed25519::PublicKey, view: u64) {
        if !self.listening(now) {
            return;
        }
        if let Ok(mut heard) = self.heard.lock() {
            let seen = heard.entry(peer).or_default();
            *seen = (*seen).max(view);
        }
    }

    /// Whether this validator may send `vote` at `now`.
    pub fn allows(&self, now: SystemTime, vote: &ConsensusVote) -> bool {
        if matches!(vote, Vote::Nullify(_)) {
            return true;
        }
        !self.listening(now) && vote.view().get() > self.hold_through()
    }

    /// The last view in which this validator withholds its notarize and finalize votes
    /// (decided once listening is over): one past the view its peers reached, since simplex
    /// may sign a vote one view ahead of its current one.
    fn hold_through(&self) -> u64 {
        *self.hold_through.get_or_init(|| {
            let mut views: Vec<u64> = self
                .heard
                .lock()
                .map(|h| h.values().copied().collect())
                .unwrap_or_default();
            views.sort_unstable_by(|a, b| b.cmp(a));
            let through = views
                .get(self.faults)
                .or(views.last())
                .map_or(0, |view| view.saturating_add(1));
            tracing::info!(
                heard = views.len(),
                through,
                "started without a consensus journal: no notarize or finalize vote in views up to {through}"
            );
            through
        })
    }
}

/// `message` as a consensus vote, if it is one.
fn vote_of(message: &IoBufs) -> Option<ConsensusVote> {
    ConsensusVote::read_cfg(&mut message.clone(), &()).ok()
}

/// The vote channel's sender: with a [`Recovery`] (a validator without its journal), drops
/// what [`Recovery::allows`] refuses, as if sent; without, sends everything.
pub struct GuardedSender<S, E> {
    inner: S,
    recovery: Option<Arc<Recovery>>,
    clock: Arc<E>,
}

impl<S, E> GuardedSender<S, E> {
    /// Guards `inner`.
    pub fn new(inner: S, recovery: Option<Arc<Recovery>>, clock: E) -> Self {
        GuardedSender {
            inner,
            recovery,
            clock: Arc::new(clock),
        }
    }
}

impl<S: std::fmt::Debug, E> std::fmt::Debug for GuardedSender<S, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedSender")
            .field("inner", &self.inner)
            .field("recovery", &self.recovery)
            .finish_non_exhaustive()
    }
}

impl<S: Clone, E> Clone for GuardedSender<S, E> {
    fn clone(&self) -> Self {
        GuardedSender {
            inner: self.inner.clone(),
            recovery: self.recovery.clone(),
            clock: self.clock.clone(),
        }
    }
}

impl<S, E> LimitedSender for GuardedSender<S, E>
where
    S: LimitedSender,
    E: Clock + Send + Sync + 'static,
{
    type PublicKey = S::PublicKey;
    type Checked<'a>
        = GuardedChecked<S::Checked<'a>>
    where
        Self: 'a;

    fn check(
        &mut self,
        recipients: Recipients<Self::PublicKey>,
    ) -> Result<Self::Checked<'_>, SystemTime> {
        let now = self.clock.current();
        let recovery = self.recovery.clone();
        self.inner.check(recipients).map(|inner| GuardedChecked {
            inner,
            recovery,
            now,
        })
    }
}

/// [`GuardedSender`]'s checked sender.
#[derive(Debug)]
pub struct GuardedChecked<C> {
    inner: C,
    recovery: Option<Arc<Recovery>>,
    now: SystemTime,
}

impl<C: CheckedSender> CheckedSender for GuardedChecked<C> {
    type PublicKey = C::PublicKey;

    fn recipients(&self) -> Vec<Self::PublicKey> {
        self.inner.recipients()
    }

    fn send(self, message: impl Into<IoBufs> + Send, priority: bool) -> Unreliable<Feedback> {
        let message = message.into();
        if let Some(recovery) = &self.recovery
            && let Some(vote) = vote_of(&message)
            && !recovery.allows(self.now, &vote)
        {
            tracing::debug!(view = %vote.view(), "vote withheld: this validator lost its journal");
            return Unreliable::Outcome(Feedback::Ok);
        }
        self.inner.send(message, priority)
    }
}

/// The vote channel's receiver: with a [`Recovery`], notes the view of each vote while it
/// listens. Every message is passed on unchanged.
pub struct GuardedReceiver<R, E> {
    inner: R,
    recovery: Option<Arc<Recovery>>,
    clock: E,
}

impl<R, E> GuardedReceiver<R, E> {
    /// Guards `inner`.
    pub fn new(inner: R, recovery: Option<Arc<Recovery>>, clock: E) -> Self {
        GuardedReceiver {
            inner,
            recovery,
            clock,
        }
    }
}

impl<R: std::fmt::Debug, E> std::fmt::Debug for GuardedReceiver<R, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedReceiver")
            .field("inner", &self.inner)
            .field("recovery", &self.recovery)
            .finish_non_exhaustive()
    }
}

impl<R, E> Receiver for GuardedReceiver<R, E>
where
    R: Receiver<PublicKey = ed25519::PublicKey>,
    E: Clock + Send + 'static,
{
    type Error = R::Error;
    type PublicKey = ed25519::PublicKey;

    async fn recv(&mut self) -> Result<commonware_p2p::Message<Self::PublicKey>, Self::Error> {
        let (peer, message) = self.inner.recv().await?;
        if let Some(recovery) = &self.recovery {
            let now = self.clock.current();
            if recovery.listening(now)
                && let Some(vote) = vote_of(&IoBufs::from(message.clone()))
            {
                recovery.heard(now, peer.clone(), vote.view().get());
            }
        }
        Ok((peer, message))
    }

    fn capacity(&self) -> NonZeroUsize {
        self.inner.capacity()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn key(i: u64) -> ed25519::PublicKey {
        use commonware_cryptography::Signer;
        ed25519::PrivateKey::from_seed(i).public_key()
    }

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn the_view_withheld_through_is_one_an_honest_peer_reached() {
        // Four validators, one of them possibly Byzantine: the second highest of the three
        // peers' views.
        let r = Recovery::new(at(100), Duration::from_secs(4), 4);
        r.heard(at(101), key(1), 40);
        r.heard(at(101), key(2), 41);
        r.heard(at(102), key(3), 1_000_000);
        r.heard(at(102), key(2), 39);
        // Heard after listening ended: ignored.
        assert!(!r.listening(at(105)));
        r.heard(at(105), key(1), 500);
        // One past it: simplex may vote a view ahead of its own.
        assert_eq!(r.hold_through(), 42);
    }

    #[test]
    fn it_withholds_notarize_and_finalize_up_to_that_view_and_never_nullify() {
        use commonware_consensus::simplex::types::{Finalize, Notarize, Nullify, Proposal};
        use commonware_consensus::types::{Epoch, Round, View};
        use commonware_cryptography::{Hasher, Sha256, Signer};
        use commonware_utils::ordered::Set;
        let keys: Vec<ed25519::PrivateKey> = (0..4).map(ed25519::PrivateKey::from_seed).collect();
        let participants: Set<ed25519::PublicKey> =
            Set::from_iter_dedup(keys.iter().map(|k| k.public_key()));
        let scheme = Scheme::signer(b"test", participants, keys[0].clone()).unwrap();
        let round = |v: u64| Round::new(Epoch::zero(), View::new(v));
        let proposal = |v: u64| {
            Proposal::new(
                round(v),
                View::new(v - 1),
                Sha256::hash(&[b"block".as_slice()]),
            )
        };
        let notarize = |v: u64| Vote::Notarize(Notarize::sign(&scheme, proposal(v)).unwrap());
        let finalize = |v: u64| Vote::Finalize(Finalize::sign(&scheme, proposal(v)).unwrap());
        let nullify =
            |v: u64| Vote::Nullify(Nullify::sign::<sha256::Digest>(&scheme, round(v)).unwrap());

        let r = Recovery::new(at(0), Duration::from_secs(4), 4);
        for (i, key) in keys.iter().enumerate().skip(1) {
            r.heard(at(1), key.public_key(), 20 + i as u64);
        }
        // While it listens: nullify only.
        assert!(r.listening(at(2)));
        assert!(r.allows(at(2), &nullify(30)));
        assert!(!r.allows(at(2), &notarize(30)));
        assert!(!r.allows(at(2), &finalize(30)));
        // Then: nothing carrying a proposal up to one past view 22, everything above.
        assert!(!r.allows(at(5), &notarize(23)));
        assert!(!r.allows(at(5), &finalize(5)));
        assert!(r.allows(at(5), &nullify(23)));
        assert!(r.allows(at(5), &notarize(24)));
        assert!(r.allows(at(5), &finalize(24)));
        // What it read off the wire is what it judges.
        let bytes = IoBufs::from(commonware_codec::Encode::encode(&notarize(23)));
        let read = vote_of(&bytes).unwrap();
        assert_eq!(read.view(), View::new(23));
        assert!(matches!(read, Vote::Notarize(_)));
        assert!(vote_of(&IoBufs::from(vec![9u8, 1, 2])).is_none());
    }

    #[test]
    fn it_listens_until_enough_peers_are_heard() {
        // Seven validators, two possibly Byzantine: three peers must be heard.
        let r = Recovery::new(at(0), Duration::from_secs(4), 7);
        r.heard(at(1), key(1), 12);
        r.heard(at(1), key(2), 30);
        assert!(r.listening(at(60)), "two peers could both be lying");
        r.heard(at(61), key(3), 14);
        assert!(!r.listening(at(61)));
        assert_eq!(r.hold_through(), 13);
        // A validator alone has nobody to hear.
        let alone = Recovery::new(at(0), Duration::from_secs(4), 1);
        assert!(!alone.listening(at(4)));
        assert_eq!(alone.hold_through(), 0);
    }
}
