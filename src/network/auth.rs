//! Request signatures and replay protection. Pure: no sockets, no clocks (the
//! caller passes `now`).
//!
//! Every API request carries five headers:
//!
//! | header | value |
//! |---|---|
//! | `X-Dportage-Key` | the signer's public key, 64 hex digits |
//! | `X-Dportage-Coordinator` | the public key of the coordinator the request is for, 64 hex digits |
//! | `X-Dportage-Time` | unix seconds when signed |
//! | `X-Dportage-Nonce` | 16 random bytes, 32 hex digits, never reused |
//! | `X-Dportage-Signature` | Ed25519 signature, 128 hex digits |
//!
//! The signature covers [`signing_bytes`]: a context string, the coordinator's
//! key, the method, the path with query, the time, the nonce and the blake3
//! hash of the body, one per line. A coordinator verifies with its own key in
//! that place, so a request recorded on the way to one coordinator cannot be
//! replayed to another (whose nonce cache has never seen it). A client learns
//! the key from `GET /v1/coordinator-key` (a signed proof, see
//! [`super::api::CoordinatorKeyProof`]) and pins it, or is given it
//! (`--coordinator-key`). The coordinator rejects times more than [`CLOCK_WINDOW_SECS`] away from
//! its clock and nonces it has seen signed by the same key within that window
//! (it remembers each nonce until its timestamp leaves the window, so memory is
//! bounded by the request rate of authenticated members, and capped: in all,
//! and per key, so that one key cannot fill the cache and lock everyone out).

use std::collections::{HashMap, HashSet, VecDeque};

use ed25519_dalek::{Signature, VerifyingKey};

use super::identity::{Identity, IdentityId};

pub const HDR_KEY: &str = "x-dportage-key";
pub const HDR_TIME: &str = "x-dportage-time";
pub const HDR_NONCE: &str = "x-dportage-nonce";
pub const HDR_SIG: &str = "x-dportage-signature";
pub const HDR_COORDINATOR: &str = "x-dportage-coordinator";
pub use super::clock::CLOCK_WINDOW_SECS;
/// v2: v1 did not name the coordinator, so a v1 request is refused (it could
/// have been recorded on its way to another coordinator).
const CONTEXT: &[u8] = b"dportage-request-v2\n";

/// The bytes a request signature covers.
pub fn signing_bytes(
    coordinator: &IdentityId,
    method: &str,
    path_and_query: &str,
    time: u64,
    nonce_hex: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut m = Vec::with_capacity(CONTEXT.len() + method.len() + path_and_query.len() + 128);
    m.extend_from_slice(CONTEXT);
    m.extend_from_slice(coordinator.to_string().as_bytes());
    m.push(b'\n');
    m.extend_from_slice(method.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(path_and_query.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(time.to_string().as_bytes());
    m.push(b'\n');
    m.extend_from_slice(nonce_hex.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(blake3::hash(body).to_hex().as_bytes());
    m
}

/// The five header values for a signed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    pub key: String,
    pub coordinator: String,
    pub time: String,
    pub nonce: String,
    pub signature: String,
}

impl SignedHeaders {
    pub fn pairs(&self) -> [(&'static str, &str); 5] {
        [
            (HDR_KEY, &self.key),
            (HDR_COORDINATOR, &self.coordinator),
            (HDR_TIME, &self.time),
            (HDR_NONCE, &self.nonce),
            (HDR_SIG, &self.signature),
        ]
    }
}

/// Sign a request for the coordinator whose key is `coordinator`, with a
/// fresh random nonce.
pub fn sign_request(
    identity: &Identity,
    coordinator: &IdentityId,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    now_unix: u64,
) -> SignedHeaders {
    let mut nonce = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut nonce);
    sign_request_with_nonce(
        identity,
        coordinator,
        method,
        path_and_query,
        body,
        now_unix,
        nonce,
    )
}

pub fn sign_request_with_nonce(
    identity: &Identity,
    coordinator: &IdentityId,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    now_unix: u64,
    nonce: [u8; 16],
) -> SignedHeaders {
    let nonce_hex = hex::encode(nonce);
    let sig = identity.sign(&signing_bytes(
        coordinator,
        method,
        path_and_query,
        now_unix,
        &nonce_hex,
        body,
    ));
    SignedHeaders {
        key: identity.id().to_string(),
        coordinator: coordinator.to_string(),
        time: now_unix.to_string(),
        nonce: nonce_hex,
        signature: hex::encode(sig),
    }
}

/// Why a request was not authenticated. The messages go back to the peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing header {0}: every API request must be signed (see docs/coordinator-api.md)")]
    Missing(&'static str),
    #[error("malformed header {header}: {why}")]
    Malformed { header: &'static str, why: String },
    #[error("request time {claimed} is {skew} s away from the coordinator's clock {now} (limit {CLOCK_WINDOW_SECS} s); fix the clock (NTP)")]
    Stale { claimed: u64, now: u64, skew: u64 },
    #[error("signature does not verify for key {0}")]
    BadSignature(String),
    #[error(
        "missing header {HDR_COORDINATOR}: a request must be signed for this coordinator's key \
         (GET /v1/coordinator-key) so that it cannot be replayed to another coordinator; this \
         client is older than the coordinator: upgrade dportage"
    )]
    NoCoordinator,
    #[error(
        "request signed for coordinator {signed_for}, but this coordinator's key is {this}: a \
         request meant for another coordinator (or replayed from one) is refused. If this is \
         the coordinator you meant, its key changed: check the new key with its operator, then \
         delete its line from coordinator-keys.json in DPORTAGE_DIR (or give --coordinator-key)"
    )]
    WrongCoordinator { signed_for: String, this: String },
    #[error(
        "nonce already used by this key within the last {CLOCK_WINDOW_SECS} s: replayed request"
    )]
    Replay,
    #[error("too many recent requests to remember their nonces; retry later")]
    Overloaded,
    #[error("this key sent {0} requests within the last {CLOCK_WINDOW_SECS} s, the most one key may; slow down and retry later")]
    KeyBusy(usize),
    #[error("{0} signed requests came from your network (/24, IPv6 /48) within the last {CLOCK_WINDOW_SECS} s, the most one network may; retry later")]
    NetworkBusy(usize),
}

impl AuthError {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            AuthError::Missing(_) => "missing",
            AuthError::Malformed { .. } => "malformed",
            AuthError::Stale { .. } => "stale",
            AuthError::BadSignature(_) => "bad_signature",
            AuthError::NoCoordinator | AuthError::WrongCoordinator { .. } => "wrong_coordinator",
            AuthError::Replay => "replay",
            AuthError::Overloaded => "overloaded",
            AuthError::KeyBusy(_) => "key_busy",
            AuthError::NetworkBusy(_) => "network_busy",
        }
    }
}

/// The claimed (not yet verified) authentication of a request.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub key: IdentityId,
    /// The coordinator the signer says the request is for.
    pub coordinator: IdentityId,
    pub time: u64,
    pub nonce: [u8; 16],
    pub nonce_hex: String,
    pub signature: [u8; 64],
}

/// Parse the four headers; `get` returns a header's value as text.
pub fn parse_claim<'a>(
    get: impl Fn(&'static str) -> Option<&'a str>,
) -> Result<Claimed, AuthError> {
    let need = |h: &'static str| get(h).ok_or(AuthError::Missing(h));
    let key_s = need(HDR_KEY)?;
    let key = key_s
        .parse::<IdentityId>()
        .map_err(|why| AuthError::Malformed {
            header: HDR_KEY,
            why: why.to_string(),
        })?;
    let coordinator = get(HDR_COORDINATOR)
        .ok_or(AuthError::NoCoordinator)?
        .parse::<IdentityId>()
        .map_err(|why| AuthError::Malformed {
            header: HDR_COORDINATOR,
            why: why.to_string(),
        })?;
    let time_s = need(HDR_TIME)?;
    if time_s.is_empty() || time_s.len() > 20 || !time_s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AuthError::Malformed {
            header: HDR_TIME,
            why: "not unix seconds".into(),
        });
    }
    let time = time_s.parse::<u64>().map_err(|e| AuthError::Malformed {
        header: HDR_TIME,
        why: e.to_string(),
    })?;
    let nonce_hex = need(HDR_NONCE)?;
    let mut nonce = [0u8; 16];
    if nonce_hex.len() != 32 || hex::decode_to_slice(nonce_hex, &mut nonce).is_err() {
        return Err(AuthError::Malformed {
            header: HDR_NONCE,
            why: "not 32 hex digits".into(),
        });
    }
    let sig_hex = need(HDR_SIG)?;
    let mut signature = [0u8; 64];
    if sig_hex.len() != 128 || hex::decode_to_slice(sig_hex, &mut signature).is_err() {
        return Err(AuthError::Malformed {
            header: HDR_SIG,
            why: "not 128 hex digits".into(),
        });
    }
    Ok(Claimed {
        key,
        coordinator,
        time,
        nonce,
        nonce_hex: nonce_hex.to_ascii_lowercase(),
        signature,
    })
}

/// Reject timestamps outside the window. Cheap; done before the signature.
pub fn check_time(claim: &Claimed, now_unix: u64) -> Result<(), AuthError> {
    let skew = claim.time.abs_diff(now_unix);
    if skew > CLOCK_WINDOW_SECS {
        return Err(AuthError::Stale {
            claimed: claim.time,
            now: now_unix,
            skew,
        });
    }
    Ok(())
}

/// Refuse a request signed for another coordinator than `this` (cheap; the
/// signature check would refuse it too, with a less helpful message).
pub fn check_coordinator(claim: &Claimed, this: &IdentityId) -> Result<(), AuthError> {
    if claim.coordinator != *this {
        return Err(AuthError::WrongCoordinator {
            signed_for: claim.coordinator.to_string(),
            this: this.to_string(),
        });
    }
    Ok(())
}

/// Verify the signature with an already-decoded key, as coordinator `this`:
/// its own key, not the one the request names, is what the signature must
/// cover.
pub fn verify_claim(
    key: &VerifyingKey,
    claim: &Claimed,
    this: &IdentityId,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> Result<(), AuthError> {
    check_coordinator(claim, this)?;
    let msg = signing_bytes(
        this,
        method,
        path_and_query,
        claim.time,
        &claim.nonce_hex,
        body,
    );
    key.verify_strict(&msg, &Signature::from_bytes(&claim.signature))
        .map_err(|_| AuthError::BadSignature(claim.key.short()))
}

/// Decoded public keys, so a known key costs no point decompression. Bounded:
/// when full it is simply cleared (keys are cheap to decode again).
#[derive(Default)]
pub struct KeyCache {
    map: HashMap<IdentityId, VerifyingKey>,
}

const KEY_CACHE_MAX: usize = 400_000;

impl KeyCache {
    pub fn get(&mut self, id: &IdentityId) -> Result<VerifyingKey, AuthError> {
        if let Some(k) = self.map.get(id) {
            return Ok(*k);
        }
        let k = VerifyingKey::from_bytes(&id.0).map_err(|_| AuthError::Malformed {
            header: HDR_KEY,
            why: "not a valid Ed25519 public key".into(),
        })?;
        if k.is_weak() {
            return Err(AuthError::Malformed {
                header: HDR_KEY,
                why: "weak (small-order) public key".into(),
            });
        }
        if self.map.len() >= KEY_CACHE_MAX {
            self.map.clear();
        }
        self.map.insert(*id, k);
        Ok(k)
    }
}

/// Nonces seen recently. Each is remembered until its claimed time can no longer
/// pass [`check_time`]; expiry works on 16 s slots of claimed time. Bounded in
/// all, per key, and per network (the caller's tag for where the request came
/// from: fresh keys are free, so one machine could otherwise mint enough of
/// them to fill the cache). At a bound new nonces are refused, never old ones
/// forgotten early: forgetting a nonce whose time is still in the window would
/// let its request be replayed.
pub struct NonceCache {
    seen: HashSet<(u64, u128)>,
    /// Per slot: each nonce with the network it came from.
    slots: VecDeque<(u64, Vec<Remembered>)>,
    /// Nonces remembered per key tag.
    per_key: HashMap<u64, usize>,
    /// Nonces remembered per network tag.
    per_network: HashMap<u64, usize>,
    cap: usize,
    per_key_cap: usize,
    per_network_cap: usize,
}

/// A remembered nonce: ((key tag, nonce), network tag).
type Remembered = ((u64, u128), u64);

const SLOT_SECS: u64 = 16;

/// The longest a nonce is remembered: a time up to the window ahead of now
/// stays valid until the window past it, plus a slot's rounding. A key that
/// sends `r` requests per second holds at most about `r` times this many.
pub const NONCE_LIFETIME_SECS: u64 = 2 * CLOCK_WINDOW_SECS + SLOT_SECS;

impl NonceCache {
    /// At most `cap` nonces in all; no limit per key.
    pub fn new(cap: usize) -> Self {
        Self::with_caps(cap, usize::MAX, usize::MAX)
    }

    /// At most `cap` nonces in all, `per_key_cap` of any one key and
    /// `per_network_cap` from any one network.
    pub fn with_caps(cap: usize, per_key_cap: usize, per_network_cap: usize) -> Self {
        Self {
            seen: HashSet::new(),
            slots: VecDeque::new(),
            per_key: HashMap::new(),
            per_network: HashMap::new(),
            cap,
            per_key_cap,
            per_network_cap,
        }
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Nonces remembered for `key`.
    pub fn len_of(&self, key: &IdentityId) -> usize {
        self.per_key.get(&key_tag(key)).copied().unwrap_or(0)
    }

    /// Record (key, nonce) claimed at `time`; `Err(Replay)` if already seen.
    /// Call only after the signature verified, so strangers cannot fill it.
    pub fn check_and_insert(&mut self, claim: &Claimed, now_unix: u64) -> Result<(), AuthError> {
        self.check(claim, 0, now_unix)?;
        self.insert(claim, 0);
        Ok(())
    }

    /// Whether [`insert`](Self::insert) may record this nonce: not a replay,
    /// and neither cap reached. Records nothing, so a caller can refuse the
    /// request for another reason (a quota) without spending the nonce.
    pub fn check(&mut self, claim: &Claimed, network: u64, now_unix: u64) -> Result<(), AuthError> {
        self.prune(now_unix);
        let entry = (key_tag(&claim.key), u128::from_le_bytes(claim.nonce));
        if self.seen.contains(&entry) {
            return Err(AuthError::Replay);
        }
        let of_key = self.per_key.get(&entry.0).copied().unwrap_or(0);
        if of_key >= self.per_key_cap {
            return Err(AuthError::KeyBusy(of_key));
        }
        let of_network = self.per_network.get(&network).copied().unwrap_or(0);
        if of_network >= self.per_network_cap {
            return Err(AuthError::NetworkBusy(of_network));
        }
        if self.seen.len() >= self.cap {
            return Err(AuthError::Overloaded);
        }
        Ok(())
    }

    /// Record a nonce [`check`](Self::check) accepted (in the same critical section).
    pub fn insert(&mut self, claim: &Claimed, network: u64) {
        let entry = (key_tag(&claim.key), u128::from_le_bytes(claim.nonce));
        if !self.seen.insert(entry) {
            return;
        }
        *self.per_key.entry(entry.0).or_insert(0) += 1;
        *self.per_network.entry(network).or_insert(0) += 1;
        let entry = (entry, network);
        let slot = claim.time / SLOT_SECS;
        // Claimed times are close to now, so the slot is almost always the last.
        let pos = self.slots.iter().rposition(|(s, _)| *s <= slot);
        match pos {
            Some(i) if self.slots[i].0 == slot => self.slots[i].1.push(entry),
            Some(i) => self.slots.insert(i + 1, (slot, vec![entry])),
            None => self.slots.push_front((slot, vec![entry])),
        }
    }

    fn prune(&mut self, now_unix: u64) {
        // A slot's latest time is (slot+1)*SLOT_SECS-1; once that is older than
        // the window, nothing in it can pass check_time again.
        let oldest_ok = now_unix.saturating_sub(CLOCK_WINDOW_SECS);
        while let Some((slot, _)) = self.slots.front() {
            if (slot + 1) * SLOT_SECS > oldest_ok {
                break;
            }
            if let Some((_, entries)) = self.slots.pop_front() {
                for (e, network) in entries {
                    self.seen.remove(&e);
                    decrement(&mut self.per_key, e.0);
                    decrement(&mut self.per_network, network);
                }
            }
        }
    }
}

fn decrement(counts: &mut HashMap<u64, usize>, tag: u64) {
    if let Some(n) = counts.get_mut(&tag) {
        *n -= 1;
        if *n == 0 {
            counts.remove(&tag);
        }
    }
}

/// The first 8 bytes of a key: enough to tell keys apart (finding a key that
/// shares them with another is 2^64 work), and half the memory per nonce.
fn key_tag(key: &IdentityId) -> u64 {
    u64::from_le_bytes(key.0[..8].try_into().unwrap_or([0; 8]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The coordinator the tests' requests are for.
    const COORD: IdentityId = IdentityId([7; 32]);

    fn claim_of(h: &SignedHeaders) -> Claimed {
        parse_claim(|name| h.pairs().iter().find(|(n, _)| *n == name).map(|(_, v)| *v)).unwrap()
    }

    #[test]
    fn sign_verify_round_trip_and_tamper() {
        let id = Identity::generate();
        let h = sign_request(&id, &COORD, "POST", "/v1/heartbeat", b"{}", 1000);
        let c = claim_of(&h);
        let mut keys = KeyCache::default();
        let k = keys.get(&c.key).unwrap();
        verify_claim(&k, &c, &COORD, "POST", "/v1/heartbeat", b"{}").unwrap();
        assert!(
            verify_claim(&k, &c, &COORD, "POST", "/v1/heartbeat", b"{ }").is_err(),
            "body is covered"
        );
        assert!(
            verify_claim(&k, &c, &COORD, "POST", "/v1/hosts", b"{}").is_err(),
            "path is covered"
        );
        assert!(
            verify_claim(&k, &c, &COORD, "GET", "/v1/heartbeat", b"{}").is_err(),
            "method is covered"
        );
        let mut later = c.clone();
        later.time += 1;
        assert!(
            verify_claim(&k, &later, &COORD, "POST", "/v1/heartbeat", b"{}").is_err(),
            "time is covered"
        );
        let other = Identity::generate();
        let k2 = keys.get(&other.id()).unwrap();
        assert!(
            verify_claim(&k2, &c, &COORD, "POST", "/v1/heartbeat", b"{}").is_err(),
            "key is bound"
        );
    }

    #[test]
    fn a_request_for_one_coordinator_is_refused_by_another() {
        let id = Identity::generate();
        let other_coordinator = IdentityId([8; 32]);
        let h = sign_request(&id, &COORD, "POST", "/v1/hosts", b"{}", 1000);
        assert_eq!(h.coordinator, COORD.to_string());
        let c = claim_of(&h);
        let k = KeyCache::default().get(&c.key).unwrap();
        verify_claim(&k, &c, &COORD, "POST", "/v1/hosts", b"{}").unwrap();
        let e = verify_claim(&k, &c, &other_coordinator, "POST", "/v1/hosts", b"{}").unwrap_err();
        assert!(matches!(e, AuthError::WrongCoordinator { .. }), "{e}");
        assert!(e.to_string().contains("coordinator-keys.json"), "{e}");
        // Lying in the header does not help: the signature covers the key.
        let mut lied = c.clone();
        lied.coordinator = other_coordinator;
        assert!(matches!(
            verify_claim(&k, &lied, &other_coordinator, "POST", "/v1/hosts", b"{}"),
            Err(AuthError::BadSignature(_))
        ));
        // No coordinator named: refused, and the message says why.
        let without = |name: &str| {
            h.pairs()
                .iter()
                .find(|(n, _)| *n == name && *n != HDR_COORDINATOR)
                .map(|(_, v)| *v)
        };
        let e = parse_claim(without).unwrap_err();
        assert_eq!(e, AuthError::NoCoordinator);
        assert!(e.to_string().contains("upgrade"), "{e}");
    }

    #[test]
    fn time_window() {
        let id = Identity::generate();
        let c = claim_of(&sign_request(&id, &COORD, "GET", "/", b"", 10_000));
        assert!(check_time(&c, 10_000 + CLOCK_WINDOW_SECS).is_ok());
        assert!(check_time(&c, 10_000 - CLOCK_WINDOW_SECS).is_ok());
        assert!(matches!(
            check_time(&c, 10_001 + CLOCK_WINDOW_SECS),
            Err(AuthError::Stale { .. })
        ));
        assert!(matches!(
            check_time(&c, 9_999 - CLOCK_WINDOW_SECS),
            Err(AuthError::Stale { .. })
        ));
    }

    #[test]
    fn malformed_headers() {
        let r = parse_claim(|_| None);
        assert_eq!(r.unwrap_err(), AuthError::Missing(HDR_KEY));
        let r = parse_claim(|h| Some(if h == HDR_KEY { "00" } else { "1" }));
        assert!(matches!(
            r,
            Err(AuthError::Malformed {
                header: HDR_KEY,
                ..
            })
        ));
    }

    #[test]
    fn nonce_replay_and_expiry() {
        let id = Identity::generate();
        let mut cache = NonceCache::new(1000);
        let c = claim_of(&sign_request_with_nonce(
            &id, &COORD, "GET", "/", b"", 5000, [7; 16],
        ));
        cache.check_and_insert(&c, 5000).unwrap();
        assert_eq!(cache.check_and_insert(&c, 5001), Err(AuthError::Replay));
        // Same nonce from another key is not a replay.
        let c2 = claim_of(&sign_request_with_nonce(
            &Identity::generate(),
            &COORD,
            "GET",
            "/",
            b"",
            5000,
            [7; 16],
        ));
        cache.check_and_insert(&c2, 5001).unwrap();
        assert_eq!(cache.len(), 2);
        // Once the time has left the window, the slot is forgotten.
        let c3 = claim_of(&sign_request_with_nonce(
            &id,
            &COORD,
            "GET",
            "/",
            b"",
            5000 + 2 * CLOCK_WINDOW_SECS,
            [8; 16],
        ));
        cache
            .check_and_insert(&c3, 5000 + 2 * CLOCK_WINDOW_SECS)
            .unwrap();
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn nonce_cache_is_capped() {
        let id = Identity::generate();
        let mut cache = NonceCache::new(3);
        for i in 0..3u8 {
            let c = claim_of(&sign_request_with_nonce(
                &id, &COORD, "GET", "/", b"", 100, [i; 16],
            ));
            cache.check_and_insert(&c, 100).unwrap();
        }
        let c = claim_of(&sign_request_with_nonce(
            &id, &COORD, "GET", "/", b"", 100, [9; 16],
        ));
        assert_eq!(cache.check_and_insert(&c, 100), Err(AuthError::Overloaded));
    }

    #[test]
    fn one_key_cannot_fill_the_cache_and_a_refusal_stores_nothing() {
        let (greedy, other) = (Identity::generate(), Identity::generate());
        let mut cache = NonceCache::with_caps(10, 4, usize::MAX);
        for i in 0..4u8 {
            let c = claim_of(&sign_request_with_nonce(
                &greedy, &COORD, "GET", "/", b"", 100, [i; 16],
            ));
            cache.check_and_insert(&c, 100).unwrap();
        }
        let c = claim_of(&sign_request_with_nonce(
            &greedy, &COORD, "GET", "/", b"", 100, [9; 16],
        ));
        assert_eq!(cache.check_and_insert(&c, 100), Err(AuthError::KeyBusy(4)));
        assert_eq!(
            cache.len_of(&greedy.id()),
            4,
            "the refused nonce is not stored"
        );
        // A replay is still a replay at the cap (not merely busy).
        let old = claim_of(&sign_request_with_nonce(
            &greedy, &COORD, "GET", "/", b"", 100, [0; 16],
        ));
        assert_eq!(cache.check_and_insert(&old, 100), Err(AuthError::Replay));
        let c = claim_of(&sign_request_with_nonce(
            &other, &COORD, "GET", "/", b"", 100, [9; 16],
        ));
        cache
            .check_and_insert(&c, 100)
            .expect("another key is served");
        // Once the window passed, the greedy key may send again.
        let later = 100 + NONCE_LIFETIME_SECS;
        let c = claim_of(&sign_request_with_nonce(
            &greedy, &COORD, "GET", "/", b"", later, [9; 16],
        ));
        cache.check_and_insert(&c, later).unwrap();
        assert_eq!(cache.len_of(&greedy.id()), 1);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn one_network_of_fresh_keys_cannot_fill_the_cache() {
        let mut cache = NonceCache::with_caps(100, 2, 5);
        let (flood, elsewhere) = (1u64, 2u64);
        let mut refused = 0;
        for i in 0..20u8 {
            let c = claim_of(&sign_request_with_nonce(
                &Identity::generate(),
                &COORD,
                "GET",
                "/",
                b"",
                100,
                [i; 16],
            ));
            match cache.check(&c, flood, 100) {
                Ok(()) => cache.insert(&c, flood),
                Err(AuthError::NetworkBusy(5)) => refused += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!((cache.len(), refused), (5, 15));
        let c = claim_of(&sign_request(
            &Identity::generate(),
            &COORD,
            "GET",
            "/",
            b"",
            100,
        ));
        cache
            .check(&c, elsewhere, 100)
            .expect("another network is served");
        cache.insert(&c, elsewhere);
        // Forgotten with the window, per network too.
        let later = 100 + NONCE_LIFETIME_SECS;
        let c = claim_of(&sign_request(
            &Identity::generate(),
            &COORD,
            "GET",
            "/",
            b"",
            later,
        ));
        cache.check(&c, flood, later).unwrap();
        cache.insert(&c, flood);
        assert_eq!(cache.len(), 1);
    }
}
