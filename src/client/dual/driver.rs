//! The vote on the network: executes the scheduler's actions with tokio
//! (slots, connections, the preprocessor, timers) and feeds it what happened.
//! Every decision is the scheduler's; this only carries them out.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};

use crate::trust::speed::Outcome;
use crate::verify::scheduler::{Action, Answer, Await, Event, HostId, Scheduler};
use crate::verify::{status_is_vote, ResultDigest};

use crate::client::monitor_state::{self, Flight, Key, MAIN};
use crate::client::preprocess::{preprocess, PreprocessError, Preprocessed};
use crate::client::remote::{Connection, NetTimeouts, RemoteError, RemoteHost, RemoteReply};
use crate::client::slots::SlotGuard;
use crate::jobstate::binstate::Phase;

use super::speed::Stopwatch;
use super::voters::Take;
use super::{digest_of, Verified};

/// The preprocessed source, shared by every dispatch of the job.
pub(super) struct Source {
    /// Holds the temporary file and the preprocessor's stderr.
    pub(super) pre: Preprocessed,
    pub(super) bytes: Arc<Vec<u8>>,
    /// blake3 of the source, hex: what the evidence names.
    pub(super) hash: String,
}

/// What the vote leaves for the verdict.
pub(super) struct Voted {
    pub(super) scheduler: Scheduler,
    /// The scheduler's actions once no host is needed any more.
    pub(super) next: VecDeque<Action>,
    pub(super) source: Option<Source>,
    pub(super) preprocess_error: Option<PreprocessError>,
    /// The first reply of each result: the one that may be written.
    pub(super) replies: Vec<(ResultDigest, RemoteReply)>,
    /// How each host asked did, for the speed record.
    pub(super) speeds: Vec<(HostId, Outcome)>,
}

type DispatchResult = (usize, Result<RemoteReply, RemoteError>);

/// Hosts working on the job; dropping it aborts them (closing their sockets
/// and releasing their slots).
struct Flights {
    set: JoinSet<DispatchResult>,
    hosts: HashMap<tokio::task::Id, HostId>,
    aborts: HashMap<HostId, AbortHandle>,
    /// For messages only: when each host could start compiling.
    started: HashMap<HostId, Instant>,
}

/// Preprocess the job here, in a local preprocessing slot.
pub(super) async fn preprocess_source(job: &Verified<'_>) -> Result<Source, PreprocessError> {
    let cpp_slot = (!job.job.preprocessed).then(|| {
        job.lock
            .acquire_local(job.local_slots_cpp, job.settings.pause)
    });
    let slot = cpp_slot.as_ref().map_or(0, SlotGuard::number);
    monitor_state::note(MAIN, "localhost", slot, Phase::Preprocess);
    let preprocessed = preprocess(&job.job, job.settings, cpp_slot).await;
    // From here the hosts in flight show the job.
    monitor_state::forget(MAIN);
    let mut pre = preprocessed?;
    let bytes = Arc::new(std::mem::take(&mut pre.source));
    Ok(Source {
        hash: blake3::hash(&bytes).to_hex().to_string(),
        bytes,
        pre,
    })
}

/// Run the vote until the scheduler needs no host any more. `ready` is the
/// job's preprocessing when it was done before (to look the job up in the
/// cache).
pub(super) async fn vote(
    job: &Verified<'_>,
    mut ready: Option<Result<Source, PreprocessError>>,
) -> Voted {
    let mut scheduler = Scheduler::new(job.rules);
    let mut pending: VecDeque<Action> = scheduler.start().into();
    let (source_tx, source_rx) = watch::channel::<Option<Arc<Vec<u8>>>>(None);
    let mut flights = Flights {
        set: JoinSet::new(),
        hosts: HashMap::new(),
        aborts: HashMap::new(),
        started: HashMap::new(),
    };
    let mut used: Vec<usize> = Vec::new();
    let mut granted: Option<(HostId, SlotGuard)> = None;
    let mut source: Option<Source> = None;
    let mut preprocess_error = None;
    let mut replies: Vec<(ResultDigest, RemoteReply)> = Vec::new();
    let mut stopwatch = Stopwatch::default();
    while let Some(action) = pending.pop_front() {
        let event = match action {
            Action::TakeHost => {
                // A slot the scheduler did not launch on is of no use.
                granted = None;
                match job.voters.take_host(&job.lock, &used) {
                    Take::Got(idx, slot) => {
                        used.push(idx);
                        granted = Some((HostId(idx), slot));
                        Event::HostGranted {
                            host: HostId(idx),
                            now: Instant::now(),
                        }
                    }
                    Take::Busy => Event::AllHostsBusy,
                    Take::NoneLeft => Event::NoHostLeft,
                }
            }
            Action::Launch(host) => {
                match granted.take() {
                    Some((slot_host, slot)) if slot_host == host => {
                        job.launch(&mut flights, host, slot, source_rx.clone());
                        stopwatch.launched(host, Instant::now());
                    }
                    // Cannot happen: the scheduler launches the host just granted.
                    _ => tracing::error!("no slot was taken for {}", job.voters.label(host.0)),
                }
                continue;
            }
            Action::Preprocess => {
                let preprocessed = match ready.take() {
                    Some(ready) => ready,
                    None => preprocess_source(job).await,
                };
                match preprocessed {
                    Ok(ready) => {
                        let _ = source_tx.send(Some(Arc::clone(&ready.bytes)));
                        source = Some(ready);
                        let now = Instant::now();
                        for started in flights.started.values_mut() {
                            *started = now;
                        }
                        stopwatch.source_ready(now);
                        Event::SourceReady { now }
                    }
                    Err(e) => {
                        preprocess_error = Some(e);
                        Event::SourceFailed
                    }
                }
            }
            Action::Await(wait) => {
                let (event, reply) = job.next_event(&mut flights, wait).await;
                match &event {
                    Event::Replied { host, answer, now } => {
                        if status_is_vote(answer.digest.status) {
                            stopwatch.answered(*host, *now);
                        } else {
                            stopwatch.failed(*host);
                        }
                    }
                    Event::HostFailed {
                        host,
                        host_at_fault: true,
                    } => stopwatch.failed(*host),
                    Event::HostFailed { host, .. } => stopwatch.forget(*host),
                    _ => {}
                }
                if let Some((digest, reply)) = reply {
                    if !replies.iter().any(|(kept, _)| kept.same_vote(&digest)) {
                        replies.push((digest, reply));
                    }
                }
                event
            }
            Action::Hedge {
                lagging,
                first_vote_after,
            } => {
                stopwatch.hedged(lagging);
                tracing::debug!(
                    "{} is slow on {} (the first vote took {} ms); asking another host too",
                    job.voters.label(lagging.0),
                    job.input(),
                    first_vote_after.as_millis()
                );
                continue;
            }
            Action::BackOff { hosts, why } => {
                job.back_off(&hosts, why);
                continue;
            }
            Action::Cancel(host) => {
                if let Some(abort) = flights.aborts.remove(&host) {
                    abort.abort();
                }
                stopwatch.stopped(host, Instant::now());
                monitor_state::forget(flight_key(host));
                continue;
            }
            verdict => {
                pending.push_front(verdict);
                break;
            }
        };
        pending.extend(scheduler.handle(event));
    }
    Voted {
        scheduler,
        next: pending,
        source,
        preprocess_error,
        replies,
        speeds: stopwatch.finish(Instant::now()),
    }
}

impl Verified<'_> {
    /// Send the job to candidate `host`, holding `slot` while it works.
    fn launch(
        &self,
        flights: &mut Flights,
        host: HostId,
        slot: SlotGuard,
        source: watch::Receiver<Option<Arc<Vec<u8>>>>,
    ) {
        let remote = self.voters.candidates[host.0].remote.clone();
        tracing::debug!(
            "sending {} to {} (protocol {})",
            self.input(),
            remote.label,
            remote.version.number()
        );
        let argv = Arc::clone(&self.wire_bytes);
        let flight = Flight {
            key: flight_key(host),
            host: remote.host.clone(),
            slot: slot.number(),
        };
        flight.note(Phase::Connect);
        let handle = flights.set.spawn(dispatch(
            host.0,
            remote,
            flight,
            argv,
            source,
            self.timeouts,
            std::path::PathBuf::from(&self.job.output),
            slot,
        ));
        flights.hosts.insert(handle.id(), host);
        flights.aborts.insert(host, handle);
        flights.started.insert(host, Instant::now());
    }

    /// Wait as the scheduler asks; what happened, and a vote's reply to keep.
    async fn next_event(
        &self,
        flights: &mut Flights,
        wait: Await,
    ) -> (Event, Option<(ResultDigest, RemoteReply)>) {
        let pause = self.settings.pause;
        if flights.set.is_empty() {
            tracing::debug!("every slot of the voting hosts is busy; waiting");
            tokio::time::sleep(pause).await;
            return (Event::PauseOver, None);
        }
        tokio::select! {
            joined = flights.set.join_next_with_id() => match joined {
                Some(Ok((id, (idx, outcome)))) => {
                    flights.hosts.remove(&id);
                    self.ended(flights, HostId(idx), outcome)
                }
                Some(Err(e)) => match flights.hosts.remove(&e.id()) {
                    Some(host) => {
                        flights.aborts.remove(&host);
                        (Event::HostFailed { host, host_at_fault: false }, None)
                    }
                    None => (Event::PauseOver, None),
                },
                None => (Event::PauseOver, None),
            },
            _ = sleep_until(wait.hedge_at), if wait.hedge_at.is_some() => {
                (Event::HedgeTimerFired { now: Instant::now() }, None)
            }
            _ = tokio::time::sleep(pause), if wait.pause_for_slot => (Event::PauseOver, None),
        }
    }

    /// A flight ended: the event for the scheduler, and the reply if it is a vote.
    fn ended(
        &self,
        flights: &mut Flights,
        host: HostId,
        outcome: Result<RemoteReply, RemoteError>,
    ) -> (Event, Option<(ResultDigest, RemoteReply)>) {
        flights.aborts.remove(&host);
        monitor_state::forget(flight_key(host));
        let started = flights.started.remove(&host);
        let label = self.voters.label(host.0);
        let input = self.input();
        match outcome {
            Ok(reply) => {
                let now = Instant::now();
                // The object was hashed as it streamed to its temporary file.
                let mut digest = digest_of(reply.status, b"", &reply.stderr);
                if reply.status == 0 {
                    digest.object = reply.object_hash();
                }
                let answer = Answer {
                    digest,
                    stdout: *blake3::hash(&reply.stdout).as_bytes(),
                };
                let event = Event::Replied { host, answer, now };
                if !status_is_vote(reply.status) {
                    return (event, None);
                }
                let elapsed = started.map(|s| now.duration_since(s)).unwrap_or_default();
                tracing::debug!(
                    "{label} compiled {input} in {} ms: {digest}",
                    elapsed.as_millis()
                );
                (event, Some((digest, reply)))
            }
            Err(e) => {
                tracing::warn!("cannot compile {input} on {label}: {e}; asking another host");
                (
                    Event::HostFailed {
                        host,
                        // A busy host is healthy: not backed off.
                        host_at_fault: !e.is_busy(),
                    },
                    None,
                )
            }
        }
    }
}

/// The state file of candidate `host` while it works on the job.
pub(super) fn flight_key(host: HostId) -> Key {
    Some(u32::try_from(host.0).unwrap_or(u32::MAX))
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// One host: connect and send the request head at once, the source when it is
/// ready, then read the reply. The slot is held until the host is done.
#[allow(clippy::too_many_arguments)]
async fn dispatch(
    idx: usize,
    remote: RemoteHost,
    flight: Flight,
    argv: Arc<Vec<Vec<u8>>>,
    mut source: watch::Receiver<Option<Arc<Vec<u8>>>>,
    timeouts: NetTimeouts,
    output: std::path::PathBuf,
    slot: SlotGuard,
) -> DispatchResult {
    let result = async {
        let connection = Connection::open(&remote, &argv, timeouts)
            .await?
            .monitored(flight);
        let bytes = {
            let ready =
                source
                    .wait_for(|s| s.is_some())
                    .await
                    .map_err(|_| RemoteError::Closed {
                        during: "waiting for the preprocessed source",
                    })?;
            ready.as_ref().map(Arc::clone).unwrap_or_default()
        };
        connection.finish(&bytes, &output).await
    }
    .await;
    drop(slot);
    (idx, result)
}
