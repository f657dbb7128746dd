//! Membership is proven service: the challenger sends every host challenge
//! jobs (`trust::challenge`) at the address it advertises, first as soon as
//! it registers, then at unpredictable times (exponentially distributed, mean
//! `--challenge-interval`, never more often than a quarter of it). With an
//! established host of another owner and network serving the same toolchain
//! (a referee) the same job goes to both and the digests must agree; without
//! one, the answer must only be a successful compile with an object. The
//! referee's agreement is not counted for it. Outcomes go to the durable
//! record (`Shared::change_record`), so [`serves`](crate::trust::standing::serves)
//! follows, and to the events and `/metrics`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::Rng;
use tokio::sync::Semaphore;

use super::state::Shared;
use super::store::WriteOp;
use crate::job_call::{call, JobCall};
use crate::network::clock::unix_now;
use crate::network::identity::IdentityId;
use crate::protocol::ProtocolVersion;
use crate::trust::challenge::generate;
use crate::trust::standing::serves;
use crate::verify::ResultDigest;

/// Challenges in flight at once.
pub const MAX_AT_ONCE: usize = 8;

/// Where to send one job.
#[derive(Debug, Clone)]
struct Target {
    id: IdentityId,
    host: String,
    port: u16,
    lzo: bool,
    /// Takes tickets: the job goes with the coordinator's own.
    tickets: bool,
    /// The toolchain's name on this host.
    compiler: String,
}

#[derive(Debug, Clone)]
struct Plan {
    host: Target,
    toolchain: String,
    referee: Option<Target>,
}

/// The wait before a host's next challenge: exponential with mean
/// `interval`, at least `interval / 4`.
pub fn next_gap(interval: Duration, rng: &mut impl Rng) -> Duration {
    let u: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
    let secs = -u.ln() * interval.as_secs_f64();
    Duration::from_secs_f64(secs.min(1e9)).max(interval / 4)
}

/// Is `d` an acceptable answer when there is no referee: a successful
/// compile that produced an object.
pub fn proves_service(d: &ResultDigest) -> bool {
    d.status == 0 && d.object != *blake3::hash(b"").as_bytes()
}

/// Start the challenger (unless `--challenges off`). Holds only a weak
/// reference between rounds, so dropping the coordinator ends it.
pub(super) fn spawn(weak: Weak<Shared>) {
    tokio::spawn(async move {
        let interval = match weak.upgrade() {
            Some(s) if s.cfg.challenges => s.cfg.challenge_interval,
            _ => return,
        };
        // New hosts wait at most a tick for their first challenge.
        let tick = (interval / 20).clamp(Duration::from_millis(100), Duration::from_secs(1));
        let limit = Arc::new(Semaphore::new(MAX_AT_ONCE));
        let in_flight: Arc<Mutex<HashSet<IdentityId>>> = Arc::default();
        let mut due: HashMap<IdentityId, Instant> = HashMap::new();
        loop {
            tokio::time::sleep(tick).await;
            let Some(s) = weak.upgrade() else { return };
            if s.stopping.load(Ordering::SeqCst) {
                return;
            }
            let now = Instant::now();
            let plans = {
                let busy = in_flight.lock().unwrap_or_else(|p| p.into_inner());
                plan_round(&s, &mut due, &busy, now)
            };
            for plan in plans {
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    break;
                };
                let id = plan.host.id;
                due.insert(id, now + next_gap(interval, &mut rand::thread_rng()));
                in_flight
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id);
                let (s, in_flight) = (s.clone(), in_flight.clone());
                tokio::spawn(async move {
                    run(&s, plan).await;
                    in_flight
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&id);
                    drop(permit);
                });
            }
        }
    });
}

/// The hosts due for a challenge now, with their referees. New hosts are due
/// at once; hosts that left are forgotten.
fn plan_round(
    s: &Shared,
    due: &mut HashMap<IdentityId, Instant>,
    busy: &HashSet<IdentityId>,
    now: Instant,
) -> Vec<Plan> {
    let pool = s.pool_read();
    let (now_ms, exp) = (s.now_ms(), s.expiry_ms());
    let live: Vec<_> = pool
        .hosts()
        .filter(|h| now_ms.saturating_sub(h.last_seen_ms) <= exp && !pool.is_blacklisted(&h.id))
        .collect();
    due.retain(|id, _| pool.host(id).is_some());
    let mut rng = rand::thread_rng();
    let mut plans = Vec::new();
    for h in &live {
        if busy.contains(&h.id) || *due.entry(h.id).or_insert(now) > now {
            continue;
        }
        let Some(tc) = h.toolchains.choose(&mut rng) else {
            continue;
        };
        let referees: Vec<_> = live
            .iter()
            .filter(|r| {
                r.id != h.id
                    && r.owner != h.owner
                    && r.network != h.network
                    && r.standing.is_established()
                    && pool.record(&r.id).is_some_and(serves)
                    && r.toolchains.iter().any(|t| t.id == tc.id)
            })
            .collect();
        let referee = referees.choose(&mut rng).and_then(|r| {
            let name = r.toolchains.iter().find(|t| t.id == tc.id)?.name.clone();
            Some(Target {
                id: r.id,
                host: r.host.to_string(),
                port: r.port,
                lzo: r.lzo,
                tickets: r.tickets,
                compiler: name,
            })
        });
        plans.push(Plan {
            host: Target {
                id: h.id,
                host: h.host.to_string(),
                port: h.port,
                lzo: h.lzo,
                tickets: h.tickets,
                compiler: tc.name.clone(),
            },
            toolchain: tc.id.clone(),
            referee,
        });
    }
    plans.shuffle(&mut rng);
    plans
}

/// Send one job to `t`; the digest or why not.
async fn send(
    s: &Shared,
    t: &Target,
    argv: &[String],
    source: &[u8],
    timeout: Duration,
) -> Result<ResultDigest, String> {
    let addr: SocketAddr =
        tokio::time::timeout(timeout, tokio::net::lookup_host((t.host.as_str(), t.port)))
            .await
            .map_err(|_| format!("resolving {} timed out", t.host))?
            .map_err(|e| format!("cannot resolve {}: {e}", t.host))?
            .next()
            .ok_or_else(|| format!("{} has no address", t.host))?;
    let version = if t.lzo {
        ProtocolVersion::V2
    } else {
        ProtocolVersion::V1
    };
    call(&JobCall {
        addr,
        version,
        argv,
        source,
        timeout,
        ticket_pass: t.tickets.then(|| s.own_ticket_pass(t.id)),
    })
    .await
    .map_err(|e| e.to_string())
}

async fn run(s: &Shared, plan: Plan) {
    let challenge = generate(rand::random());
    let timeout = s.cfg.challenge_timeout;
    let argv = challenge.argv(&plan.host.compiler);
    let source = challenge.source.as_bytes();
    let (passed, why) = match &plan.referee {
        Some(r) => {
            let rargv = challenge.argv(&r.compiler);
            let (mine, theirs) = tokio::join!(
                send(s, &plan.host, &argv, source, timeout),
                send(s, r, &rargv, source, timeout)
            );
            match (mine, theirs) {
                (Err(e), _) => (false, e),
                // The referee failed us: fall back to proof of service.
                (Ok(d), Err(e)) => judge_alone(&d, &format!("referee {} failed ({e})", r.id)),
                (Ok(d), Ok(rd)) if d.status == rd.status && d.object == rd.object => {
                    (true, format!("agreed with established host {}", r.id))
                }
                (Ok(d), Ok(rd)) => (
                    false,
                    format!(
                        "disagreed with established host {} (status {} vs {}, objects {})",
                        r.id,
                        d.status,
                        rd.status,
                        if d.object == rd.object {
                            "equal"
                        } else {
                            "differ"
                        }
                    ),
                ),
            }
        }
        None => match send(s, &plan.host, &argv, source, timeout).await {
            Ok(d) => judge_alone(&d, "no referee for its toolchain"),
            Err(e) => (false, e),
        },
    };
    let op = WriteOp::Challenge {
        id: plan.host.id,
        passed,
        now: unix_now(),
    };
    let rec = match s.change_record(op).await {
        Ok(rec) => rec,
        Err(e) => {
            tracing::warn!("recording a challenge of {}: {e}", plan.host.id);
            return;
        }
    };
    s.counters.challenge_done(passed);
    let dropped = rec.is_some_and(|(_, r)| !serves(&r) && !passed);
    s.event(format!(
        "host {} ({}:{}, toolchain {} `{}`) {} a challenge: {why}{}",
        plan.host.id,
        plan.host.host,
        plan.host.port,
        &plan.toolchain[..plan.toolchain.len().min(12)],
        plan.host.compiler,
        if passed { "passed" } else { "failed" },
        if dropped { "; not listed" } else { "" }
    ));
}

fn judge_alone(d: &ResultDigest, context: &str) -> (bool, String) {
    if proves_service(d) {
        (true, format!("compiled ({context})"))
    } else if d.status != 0 {
        (
            false,
            format!("compile failed with status {} ({context})", d.status),
        )
    } else {
        (false, format!("returned no object ({context})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_at_least_a_quarter_and_average_near_the_interval() {
        let i = Duration::from_secs(100);
        let mut rng = rand::thread_rng();
        let gaps: Vec<_> = (0..4000).map(|_| next_gap(i, &mut rng)).collect();
        assert!(gaps.iter().all(|g| *g >= i / 4));
        let mean = gaps.iter().map(Duration::as_secs_f64).sum::<f64>() / gaps.len() as f64;
        assert!((90.0..135.0).contains(&mean), "mean {mean}");
    }

    #[test]
    fn service_needs_status_zero_and_an_object() {
        assert!(proves_service(&ResultDigest::of(0, b"obj", b"")));
        assert!(!proves_service(&ResultDigest::of(0, b"", b"")));
        assert!(!proves_service(&ResultDigest::of(256, b"obj", b"")));
    }
}
