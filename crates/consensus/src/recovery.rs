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
//! `f + 1` peers, it notes the views its peers vote in and the views of the certificates
//! simplex verifies ([`Watching`]), and it proposes, verifies and certifies nothing: simplex
//! signs a notarize vote only for a proposal it built or verified, and a finalize vote only
//! for one it certified, so it signs neither ([`Held`] sits in front of the signing, not
//! behind it: a vote signed and then left unsent would still count towards the certificates
//! this validator assembles and serves). Then it keeps out of proposing and verifying in
//! every view up to one past the view the network reached: the higher of the view its
//! certificates show (a notarization's view, the view after a nullification's or a
//! finalization's; signed by a quorum, so Byzantine peers can neither forge nor lower it)
//! and the `f + 1`-th highest view its peers voted in (which `f` Byzantine peers
//! announcing far-off views cannot raise). One past, because before the loss it may have
//! entered a view on a certificate that only `f` of the honest peers it heard had signed.
//! So as long as it has seen a certificate of the network's latest views, or heard `f + 1`
//! honest peers, a view it notarized in before the loss is at most that, and it never
//! notarizes a second proposal there; above it, it takes part as usual.
//!
//! Two votes cannot be held back as long without halting a network that needs this
//! validator for its quorums, and are judged by the view the network reached instead:
//! - A finalize vote follows a notarization its peers formed; a view notarized without it
//!   is left only once it certifies it (or a finalization arrives, which may need its vote).
//!   It certifies as soon as listening is over.
//! - A nullify vote in the view the network is in, or above, is what its peers wait for to
//!   leave a view it is needed in, and what peers listening in turn hear: it is sent. Below
//!   that the view is stale (the network has a certificate for it), and may be one this
//!   validator finalized before: a nullify there would contradict that finalize vote, and
//!   [`GuardedSender`] does not send it; nor any before it has heard a peer, until the
//!   listening time is over. (Simplex signs nullify votes on its own timers, so this guard
//!   sits behind the signing.)
//!
//! What remains: in the views up to one past the network's, a finalize or nullify vote may
//! contradict one signed before the loss; turning that into conflicting certificates takes
//! `f` Byzantine validators and honest ones that timed out in a view the others finalized.
//! A validator that hears nobody for the whole listening time takes itself for part of a new
//! network and nullifies as usual (its votes reach nobody until it hears someone). A journal
//! that is present but stale (a backup restored) is not recognised.
//!
//! A network started from genesis has no earlier votes: every validator listens once, the
//! first views pass as nullifications, and the first block follows.

use commonware_actor::{Feedback, Unreliable};
use commonware_codec::Read;
use commonware_consensus::simplex::types::{Activity, Context, Vote};
use commonware_consensus::types::Round;
use commonware_consensus::{Automaton, CertifiableAutomaton, Handoff, Reporter, Viewable};
use commonware_cryptography::{Digest, PublicKey, ed25519, sha256};
use commonware_p2p::{CheckedSender, LimitedSender, Receiver, Recipients};
use commonware_runtime::{Clock, IoBufs, Spawner};
use commonware_utils::channel::oneshot;
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use crate::application::Scheme;

type ConsensusVote = Vote<Scheme, sha256::Digest>;

/// What a validator without its journal learned while listening, shared by its vote
/// channel's sender and receiver, its automaton and its reporter.
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
    /// The view the certificates simplex verified show the network reached (a quorum signed
    /// each, so Byzantine peers can neither forge nor lower it): a notarization's view (the
    /// network is in it, or past), the view after a nullification's or a finalization's (the
    /// network has left it).
    certified: AtomicU64,
    /// Decided when listening ends: no proposal or notarize vote up to this view.
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
            certified: AtomicU64::new(0),
            hold_through: OnceLock::new(),
        })
    }

    /// How long a validator without its journal listens at least, given its leader timeout:
    /// an idle view ends within a leader timeout, so a live network sends votes and
    /// certificates within it. (A network stuck in a view repeats its votes less often;
    /// listening also lasts until `f + 1` peers were heard.)
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

    /// Notes that a certificate simplex verified shows the network reached `view` (at any
    /// time: it only grows).
    pub fn certified(&self, view: u64) {
        self.certified.fetch_max(view, Ordering::Relaxed);
    }

    /// The view its peers reached: the higher of the view its certificates show
    /// ([`Recovery::certified`]) and the `f + 1`-th highest view any peer voted in while it
    /// listened (the lowest, when fewer were heard). `f` Byzantine peers can raise neither;
    /// they can lower the second (by voting in old views) but not the first. None before
    /// anything is heard.
    fn reached(&self) -> Option<u64> {
        let mut views: Vec<u64> = self
            .heard
            .lock()
            .map(|h| h.values().copied().collect())
            .unwrap_or_default();
        views.sort_unstable_by(|a, b| b.cmp(a));
        let voted = views.get(self.faults).or(views.last()).copied();
        let certified = Some(self.certified.load(Ordering::Relaxed)).filter(|v| *v > 0);
        voted.max(certified)
    }

    /// Whether this validator may send its nullify vote for `view` at `now`: not for a view
    /// below the one its peers reached. Such a view is stale (the others have left it, so
    /// the vote helps nobody), and it may be one this validator finalized before it lost its
    /// journal: a nullify there would contradict that finalize vote. In the view its peers
    /// are in, and above, it nullifies as usual, so a network that needs its vote to leave a
    /// view does. Before it has heard any peer it cannot tell a stale view (a certificate it
    /// started from may be old): it sends none until the listening time is over (a new
    /// network, where everybody listens and nobody has voted, then starts on
    /// nullifications).
    pub fn allows_nullify(&self, now: SystemTime, view: u64) -> bool {
        let heard_none = self.heard.lock().map_or(true, |h| h.is_empty());
        if heard_none && now < self.until {
            return false;
        }
        self.reached().is_none_or(|reached| view >= reached)
    }

    /// Whether this validator sits out `view` at `now`: it neither proposes nor verifies
    /// there, so it signs no notarize vote.
    ///
    /// Simplex enters a view on a certificate, and asks to propose or verify there before
    /// it reports that certificate. Until it has ([`Recovery::certified`] is at least the
    /// view before), the hold is not decided: the view it is in would be missing from it,
    /// and lying peers, voting in old views, could have lowered it below that view.
    pub fn holds(&self, now: SystemTime, view: u64) -> bool {
        if self.listening(now) {
            return true;
        }
        let reported = self.certified.load(Ordering::Relaxed).saturating_add(1) >= view;
        if self.hold_through.get().is_none() && !reported {
            return true;
        }
        view <= self.hold_through()
    }

    /// The last view in which this validator neither proposes nor verifies (decided once
    /// listening is over): one past the view its peers reached, since before the loss it may
    /// have entered a view on a certificate that only `f` of the honest peers it heard had
    /// signed, one view ahead of them.
    fn hold_through(&self) -> u64 {
        *self.hold_through.get_or_init(|| {
            let through = self.reached().map_or(0, |view| view.saturating_add(1));
            tracing::info!(
                heard = self.heard.lock().map_or(0, |h| h.len()),
                through,
                "started without a consensus journal: no proposal or notarize vote in views up to {through}"
            );
            through
        })
    }
}

/// `message` as a consensus vote, if it is one.
fn vote_of(message: &IoBufs) -> Option<ConsensusVote> {
    ConsensusVote::read_cfg(&mut message.clone(), &()).ok()
}

/// The automaton simplex drives: with a [`Recovery`] (a validator without its journal),
/// leaves every request to propose or verify in a view [`Recovery::holds`] unanswered, so
/// that simplex has nothing to sign a notarize vote for, and answers a request to certify
/// (which leads to a finalize vote) only once listening is over; without, passes everything
/// on.
///
/// The requests are left pending rather than declined: a declined verification would make
/// simplex nullify the view at once, and the validator may have finalized that view before
/// it lost its journal. A pending one lets the view pass as when a proposal is slow to
/// arrive, most often by the certificates its peers reach without it.
pub struct Held<A, E> {
    inner: A,
    recovery: Option<Arc<Recovery>>,
    clock: Arc<E>,
    /// The responses left pending, kept until simplex drops its end (when it leaves or
    /// prunes the view).
    pending: Arc<Mutex<Vec<Box<dyn Pending>>>>,
}

/// A response left pending.
trait Pending: Send {
    /// Whether the requester dropped its end.
    fn abandoned(&self) -> bool;
}

impl<T: Send> Pending for oneshot::Sender<T> {
    fn abandoned(&self) -> bool {
        self.is_closed()
    }
}

impl<A: Clone, E> Clone for Held<A, E> {
    fn clone(&self) -> Self {
        Held {
            inner: self.inner.clone(),
            recovery: self.recovery.clone(),
            clock: self.clock.clone(),
            pending: self.pending.clone(),
        }
    }
}

impl<A, E> Held<A, E> {
    /// Guards `inner`.
    pub fn new(inner: A, recovery: Option<Arc<Recovery>>, clock: E) -> Self {
        Held {
            inner,
            recovery,
            clock: Arc::new(clock),
            pending: Arc::default(),
        }
    }
}

/// How often a request to certify made while listening looks whether listening is over.
const CERTIFY_POLL: Duration = Duration::from_millis(50);

impl<A, E: Clock> Held<A, E> {
    /// Whether proposing and verifying in `round` are sat out.
    fn holds(&self, round: Round) -> bool {
        let Some(recovery) = &self.recovery else {
            return false;
        };
        let holds = recovery.holds(self.clock.current(), round.view().get());
        if holds {
            tracing::debug!(%round, "sitting the view out: this validator lost its journal");
        }
        holds
    }

    /// A response that is not given while its requester waits.
    fn unanswered<T: Send + 'static>(&self) -> oneshot::Receiver<T> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut pending) = self.pending.lock() {
            pending.retain(|p| !p.abandoned());
            pending.push(Box::new(tx));
        }
        rx
    }
}

impl<A: std::fmt::Debug, E> std::fmt::Debug for Held<A, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("inner", &self.inner)
            .field("recovery", &self.recovery)
            .finish_non_exhaustive()
    }
}

impl<A, E, D, P> Automaton for Held<A, E>
where
    A: Automaton<Context = Context<D, P>, Digest = D>,
    E: Clock + Send + Sync + 'static,
    D: Digest,
    P: PublicKey,
{
    type Context = Context<D, P>;
    type Digest = D;

    async fn propose(&mut self, context: Self::Context) -> oneshot::Receiver<D> {
        if self.holds(context.round) {
            return self.unanswered();
        }
        self.inner.propose(context).await
    }

    async fn verify(&mut self, context: Self::Context, payload: D) -> oneshot::Receiver<bool> {
        if self.holds(context.round) {
            return self.unanswered();
        }
        self.inner.verify(context, payload).await
    }
}

impl<A, E, D, P> CertifiableAutomaton for Held<A, E>
where
    A: CertifiableAutomaton<Context = Context<D, P>, Digest = D>,
    E: Clock + Spawner,
    D: Digest,
    P: PublicKey,
{
    async fn prepare(&mut self, context: Self::Context) -> oneshot::Receiver<Handoff<D>> {
        if self.holds(context.round) {
            return self.unanswered();
        }
        self.inner.prepare(context).await
    }

    async fn certify(&mut self, round: Round, payload: D) -> oneshot::Receiver<bool> {
        let now = self.clock.current();
        let Some(recovery) = self.recovery.clone().filter(|r| r.listening(now)) else {
            return self.inner.certify(round, payload).await;
        };
        let (mut tx, rx) = oneshot::channel();
        let mut inner = self.inner.clone();
        self.clock
            .child("certify")
            .spawn(move |context| async move {
                while recovery.listening(context.current()) {
                    if tx.is_closed() {
                        return;
                    }
                    context.sleep(CERTIFY_POLL).await;
                }
                let answer = inner.certify(round, payload).await;
                let certified = {
                    let closed = tx.closed();
                    futures::pin_mut!(answer, closed);
                    match futures::future::select(answer, closed).await {
                        futures::future::Either::Left((Ok(certified), _)) => Some(certified),
                        _ => None,
                    }
                };
                if let Some(certified) = certified {
                    let _ = tx.send(certified);
                }
            });
        rx
    }
}

/// The reporter simplex reports to: with a [`Recovery`], notes the view of every
/// certificate simplex verified ([`Recovery::certified`]); passes everything on.
#[derive(Clone, Debug)]
pub struct Watching<R> {
    inner: R,
    recovery: Option<Arc<Recovery>>,
}

impl<R> Watching<R> {
    /// Watches what is reported to `inner`.
    pub fn new(inner: R, recovery: Option<Arc<Recovery>>) -> Self {
        Watching { inner, recovery }
    }
}

impl<R, S, D> Reporter for Watching<R>
where
    R: Reporter<Activity = Activity<S, D>>,
    S: commonware_cryptography::certificate::Scheme,
    D: Digest,
{
    type Activity = Activity<S, D>;

    fn report(&mut self, activity: Self::Activity) -> Feedback {
        if let Some(recovery) = &self.recovery {
            let view = activity.view().get();
            match activity {
                Activity::Notarization(_) | Activity::Certification(_) => recovery.certified(view),
                Activity::Nullification(_) | Activity::Finalization(_) => {
                    recovery.certified(view.saturating_add(1));
                }
                _ => {}
            }
        }
        self.inner.report(activity)
    }
}

/// The vote channel's sender: with a [`Recovery`] (a validator without its journal), drops
/// the nullify votes [`Recovery::allows_nullify`] refuses, as if sent; without, sends
/// everything. (Notarize and finalize votes in held views are never signed: see [`Held`].)
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

impl<S: Clone, E> Clone for GuardedSender<S, E> {
    fn clone(&self) -> Self {
        GuardedSender {
            inner: self.inner.clone(),
            recovery: self.recovery.clone(),
            clock: self.clock.clone(),
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
            && let Some(Vote::Nullify(nullify)) = vote_of(&message)
            && !recovery.allows_nullify(self.now, nullify.view().get())
        {
            tracing::debug!(view = %nullify.view(), "stale nullify withheld: this validator lost its journal");
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
    fn it_sits_out_every_view_while_listening_and_up_to_the_hold_after() {
        let r = Recovery::new(at(0), Duration::from_secs(4), 4);
        for i in 1..4 {
            r.heard(at(1), key(i), 20 + i);
        }
        // While it listens: every view.
        assert!(r.holds(at(2), 1_000));
        // Then, until simplex reports the certificate it entered a view on, that view too.
        assert!(r.holds(at(5), 24));
        r.certified(21);
        // Then: up to one past view 22, and nothing above.
        assert!(r.holds(at(5), 5));
        assert!(r.holds(at(5), 23));
        assert!(!r.holds(at(5), 24));
    }

    #[test]
    fn a_certificate_bounds_what_lying_peers_can_lower() {
        // Four validators: one honest peer heard in view 40, and a Byzantine one replaying
        // its old vote of view 1.
        let r = Recovery::new(at(0), Duration::from_secs(4), 4);
        r.heard(at(1), key(1), 40);
        r.heard(at(1), key(3), 1);
        // By the votes alone, the second highest: 1.
        assert_eq!(r.reached(), Some(1));
        // A finalization of view 39 that simplex verified: the network reached view 40. Older
        // ones change nothing.
        r.certified(40);
        r.certified(12);
        assert_eq!(r.reached(), Some(40));
        assert!(!r.allows_nullify(at(5), 39));
        assert!(r.allows_nullify(at(5), 40));
        assert!(r.holds(at(5), 41) && !r.holds(at(5), 42));
    }

    #[test]
    fn the_hold_waits_for_the_certificate_simplex_entered_its_view_on() {
        // Four validators: an honest peer heard in view 40 and a Byzantine one voting in
        // view 1, so that by the votes alone the network is in view 1.
        let r = Recovery::new(at(0), Duration::from_secs(4), 4);
        r.heard(at(1), key(1), 40);
        r.heard(at(1), key(3), 1);
        // Listening is over. Simplex asks to verify in view 41, having entered it on a
        // notarization of view 40 that it has not reported yet: undecided, so held.
        assert!(r.holds(at(5), 41));
        assert!(r.hold_through.get().is_none());
        // Reported: the hold covers the view it is in, and one past.
        r.certified(40);
        assert!(r.holds(at(5), 41));
        assert!(!r.holds(at(5), 42));
        assert_eq!(r.hold_through.get(), Some(&41));
    }

    #[test]
    fn nullify_votes_pass_from_the_view_its_peers_reached() {
        let r = Recovery::new(at(0), Duration::from_secs(4), 4);
        // Nothing heard yet: no nullify while it listens, since any view may be stale (even
        // above a certificate it started from); after that (a new network, where nobody else
        // votes either), nullify as usual.
        assert!(!r.allows_nullify(at(1), 1));
        r.certified(9);
        assert!(!r.allows_nullify(at(1), 9));
        assert!(r.allows_nullify(at(4), 9) && !r.allows_nullify(at(4), 8));
        r.heard(at(1), key(1), 30);
        r.heard(at(1), key(2), 31);
        r.heard(at(1), key(3), 1_000_000);
        // It is in view 1 and its peers in view 30 and above: view 1 is stale (and may be
        // one it finalized), and a Byzantine peer's view 1,000,000 silences nothing.
        assert!(!r.allows_nullify(at(1), 1));
        assert!(!r.allows_nullify(at(1), 30));
        assert!(r.allows_nullify(at(1), 31));
        assert!(r.allows_nullify(at(1), 40));
        // Still so after listening, while notarize and finalize wait one view longer (once
        // simplex has reported the notarization of view 31 it entered view 32 on).
        assert!(!r.allows_nullify(at(5), 30) && r.allows_nullify(at(5), 31));
        r.certified(31);
        assert!(r.holds(at(5), 32) && !r.holds(at(5), 33));
    }

    #[test]
    fn votes_read_off_the_wire_are_what_is_heard() {
        use commonware_consensus::simplex::types::{Notarize, Proposal};
        use commonware_consensus::types::{Epoch, View};
        use commonware_cryptography::{Hasher, Sha256, Signer};
        use commonware_utils::ordered::Set;
        let keys: Vec<ed25519::PrivateKey> = (0..4).map(ed25519::PrivateKey::from_seed).collect();
        let participants: Set<ed25519::PublicKey> =
            Set::from_iter_dedup(keys.iter().map(|k| k.public_key()));
        let scheme = Scheme::signer(b"test", participants, keys[0].clone()).unwrap();
        let proposal = Proposal::new(
            Round::new(Epoch::zero(), View::new(23)),
            View::new(22),
            Sha256::hash(&[b"block".as_slice()]),
        );
        let vote: ConsensusVote = Vote::Notarize(Notarize::sign(&scheme, proposal).unwrap());
        let bytes = IoBufs::from(commonware_codec::Encode::encode(&vote));
        let read = vote_of(&bytes).unwrap();
        assert_eq!(read.view(), View::new(23));
        assert!(matches!(read, Vote::Notarize(_)));
        assert!(vote_of(&IoBufs::from(vec![9u8, 1, 2])).is_none());
    }

    /// An automaton that answers every request at once and counts them.
    #[derive(Clone, Default)]
    struct Counting(Arc<Mutex<usize>>);

    type TestContext = Context<sha256::Digest, ed25519::PublicKey>;

    fn answered<T>(value: T) -> oneshot::Receiver<T> {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(value);
        rx
    }

    impl Counting {
        fn count(&self) -> usize {
            *self.0.lock().unwrap()
        }
        fn tick(&self) {
            *self.0.lock().unwrap() += 1;
        }
    }

    impl Automaton for Counting {
        type Context = TestContext;
        type Digest = sha256::Digest;
        async fn propose(&mut self, _: TestContext) -> oneshot::Receiver<sha256::Digest> {
            self.tick();
            answered(sha256::Digest::from([7; 32]))
        }
        async fn verify(&mut self, _: TestContext, _: sha256::Digest) -> oneshot::Receiver<bool> {
            self.tick();
            answered(true)
        }
    }

    impl CertifiableAutomaton for Counting {
        async fn certify(&mut self, _: Round, _: sha256::Digest) -> oneshot::Receiver<bool> {
            self.tick();
            answered(true)
        }
    }

    #[test]
    fn held_views_are_left_unanswered_before_the_application_sees_them() {
        use commonware_consensus::types::{Epoch, View};
        use commonware_runtime::{Runner as _, Supervisor as _};
        use commonware_utils::channel::oneshot::error::TryRecvError;
        commonware_runtime::deterministic::Runner::default().start(|context| async move {
            let recovery = Recovery::new(context.current(), Duration::from_secs(4), 4);
            for i in 1..4 {
                recovery.heard(context.current(), key(i), 10);
            }
            let app = Counting::default();
            let mut held = Held::new(app.clone(), Some(recovery.clone()), context.child("held"));
            let round = |v: u64| Round::new(Epoch::zero(), View::new(v));
            let ctx = |v: u64| TestContext {
                round: round(v),
                leader: key(0),
                parent: (View::new(v - 1), sha256::Digest::from([1; 32])),
            };
            let payload = sha256::Digest::from([2; 32]);

            // Listening: nothing is answered (nor declined, which would nullify the view at
            // once), and the application is never asked.
            let mut unanswered = vec![held.verify(ctx(50), payload).await];
            let mut certified = held.certify(round(50), payload).await;
            let mut proposal = held.propose(ctx(50)).await;
            let mut handoff = held.prepare(ctx(50)).await;
            assert_eq!(proposal.try_recv(), Err(TryRecvError::Empty));
            assert!(matches!(handoff.try_recv(), Err(TryRecvError::Empty)));
            assert_eq!(certified.try_recv(), Err(TryRecvError::Empty));
            assert_eq!(app.count(), 0);

            // Listening over (its peers reached view 10): the request to certify made while
            // listening is answered, and so is any other; up to one past view 10 nothing is
            // proposed or verified.
            context.sleep(Duration::from_secs(5)).await;
            assert_eq!(certified.await, Ok(true));
            assert_eq!(app.count(), 1);
            // Simplex entered view 11 on a notarization of view 10, and reported it.
            recovery.certified(10);
            unanswered.push(held.verify(ctx(11), payload).await);
            for rx in &mut unanswered {
                assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
            }
            let mut held_proposal = held.propose(ctx(11)).await;
            assert_eq!(held_proposal.try_recv(), Err(TryRecvError::Empty));
            assert_eq!(app.count(), 1);
            assert!(held.certify(round(9), payload).await.await.unwrap());
            assert_eq!(
                held.propose(ctx(12)).await.await.unwrap(),
                sha256::Digest::from([7; 32])
            );
            assert!(held.verify(ctx(12), payload).await.await.unwrap());
            assert_eq!(app.count(), 4);
            // What simplex gives up on is forgotten.
            drop((unanswered, proposal, handoff, held_proposal));
            let _still = held.verify(ctx(3), payload).await;
            assert_eq!(held.pending.lock().unwrap().len(), 1);

            // A validator with its journal passes everything on.
            let mut open = Held::new(app.clone(), None, context.child("open"));
            assert!(open.verify(ctx(1), payload).await.await.unwrap());
            assert_eq!(app.count(), 5);
        });
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
