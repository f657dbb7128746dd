//! Tickets: how a daemon registered with a coordinator knows that a
//! connection comes from one of that coordinator's members, so it can serve
//! the network without opening itself to the whole internet (`--allow
//! 0.0.0.0/0`). Pure: bytes in, verdicts out; the clock is a parameter.
//!
//! A **ticket** is the coordinator's signed statement "member M may use host
//! H from `not_before` until `expires`". The coordinator hands one per listed
//! host out with the member's signed host list (no extra round trip). A ticket
//! alone is not enough: it travels in a file and over the wire, so the client
//! also signs a **proof** (the ticket's hash, the host, the time and a fresh
//! nonce) with M's key. The daemon checks both — and that H is itself, that
//! the coordinator key is the one it pinned — and remembers nonces while a
//! proof is fresh (`server::tickets`), so a proof seen on the wire cannot
//! be replayed either.
//!
//! On the wire the pair (the **pass**) is a `TCKT` packet before `DIST`, sent
//! only to hosts whose list entry says they take tickets: a real distccd never
//! sees one. Every length is fixed, so a hostile length is refused before a
//! byte of it is buffered.

use ed25519_dalek::{Signature, VerifyingKey};

use super::identity::{Identity, IdentityId};

/// Encoded ticket: member, host, not_before, expires, coordinator, signature.
pub const TICKET_LEN: usize = 32 + 32 + 8 + 8 + 32 + 64;
/// Encoded proof: time, nonce, signature.
pub const PROOF_LEN: usize = 8 + NONCE_LEN + 64;
/// A `TCKT` packet's body: a ticket, then its proof.
pub const PASS_LEN: usize = TICKET_LEN + PROOF_LEN;
pub const NONCE_LEN: usize = 16;
/// How long a coordinator's tickets last unless configured otherwise. Short
/// enough that a blacklisted member or host drops out within a working day;
/// long enough for most builds started from one `dportage` environment (a
/// client whose ticket expired compiles locally and says to run `dportage`
/// again).
pub const DEFAULT_LIFETIME_SECS: u64 = 12 * 3600;
/// How far a proof's time may be from the daemon's clock, either way; also
/// how long the daemon remembers a proof's nonce.
pub const PROOF_WINDOW_SECS: u64 = 300;
/// Clock skew tolerated on a ticket's `not_before`.
pub const CLOCK_SKEW_SECS: u64 = 300;

const TICKET_DOMAIN: &[u8] = b"dportage ticket v1\0";
const PROOF_DOMAIN: &[u8] = b"dportage ticket proof v1\0";

/// Why a pass is refused. The daemon logs the text; the client is told
/// nothing (it sees a closed connection, as from any distccd refusal).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error("a ticket pass is {expected} bytes, not {got}")]
    Length { expected: usize, got: usize },
    #[error("not a ticket (hex): {0}")]
    NotHex(String),
    #[error(
        "the ticket is signed by coordinator key {got}, not by this daemon's coordinator {pinned}"
    )]
    OtherCoordinator { got: String, pinned: String },
    #[error("the ticket's signature does not verify")]
    BadSignature,
    #[error("the ticket is for host {got}, not for this one ({me})")]
    OtherHost { got: String, me: String },
    #[error("the ticket expired at {expires} (now {now})")]
    Expired { expires: u64, now: u64 },
    #[error("the ticket is valid only from {not_before} (now {now})")]
    NotYetValid { not_before: u64, now: u64 },
    #[error("the proof of the ticket's member key does not verify")]
    BadProof,
    #[error("the proof was made at {made}, too far from now ({now})")]
    StaleProof { made: u64, now: u64 },
    #[error("the proof was used before (a replay)")]
    Replayed,
    #[error("this daemon does not know its coordinator's key yet (no heartbeat answered)")]
    NoCoordinatorKey,
}

/// A coordinator's signed statement that `member` may use `host` between
/// `not_before` and `expires` (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub member: IdentityId,
    pub host: IdentityId,
    pub not_before: u64,
    pub expires: u64,
    pub coordinator: IdentityId,
    signature: [u8; 64],
}

impl Ticket {
    fn signed_bytes(
        member: &IdentityId,
        host: &IdentityId,
        not_before: u64,
        expires: u64,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(TICKET_DOMAIN.len() + 80);
        out.extend_from_slice(TICKET_DOMAIN);
        out.extend_from_slice(&member.0);
        out.extend_from_slice(&host.0);
        out.extend_from_slice(&not_before.to_be_bytes());
        out.extend_from_slice(&expires.to_be_bytes());
        out
    }

    /// Issue a ticket valid from `now` (less the tolerated skew, so a daemon
    /// whose clock is a little behind takes it) for `lifetime_secs`.
    pub fn issue(
        coordinator: &Identity,
        member: IdentityId,
        host: IdentityId,
        now: u64,
        lifetime_secs: u64,
    ) -> Ticket {
        Self::issue_between(
            coordinator,
            member,
            host,
            now.saturating_sub(CLOCK_SKEW_SECS),
            now.saturating_add(lifetime_secs),
        )
    }

    /// Issue a ticket for an explicit validity window.
    pub fn issue_between(
        coordinator: &Identity,
        member: IdentityId,
        host: IdentityId,
        not_before: u64,
        expires: u64,
    ) -> Ticket {
        let signature = coordinator.sign(&Self::signed_bytes(&member, &host, not_before, expires));
        Ticket {
            member,
            host,
            not_before,
            expires,
            coordinator: coordinator.id(),
            signature,
        }
    }

    pub fn encode(&self) -> [u8; TICKET_LEN] {
        let mut out = [0u8; TICKET_LEN];
        out[..32].copy_from_slice(&self.member.0);
        out[32..64].copy_from_slice(&self.host.0);
        out[64..72].copy_from_slice(&self.not_before.to_be_bytes());
        out[72..80].copy_from_slice(&self.expires.to_be_bytes());
        out[80..112].copy_from_slice(&self.coordinator.0);
        out[112..].copy_from_slice(&self.signature);
        out
    }

    /// Parse (not verify) a ticket of exactly [`TICKET_LEN`] bytes.
    pub fn decode(bytes: &[u8]) -> Result<Ticket, TicketError> {
        let bytes: &[u8; TICKET_LEN] = bytes.try_into().map_err(|_| TicketError::Length {
            expected: TICKET_LEN,
            got: bytes.len(),
        })?;
        let key = |at: usize| IdentityId(bytes[at..at + 32].try_into().unwrap_or([0; 32]));
        let number = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().unwrap_or([0; 8]));
        Ok(Ticket {
            member: key(0),
            host: key(32),
            not_before: number(64),
            expires: number(72),
            coordinator: key(80),
            signature: bytes[112..].try_into().unwrap_or([0; 64]),
        })
    }

    /// Hex, as the signed host list carries tickets.
    pub fn to_hex(&self) -> String {
        hex::encode(self.encode())
    }

    pub fn from_hex(text: &str) -> Result<Ticket, TicketError> {
        if text.len() != 2 * TICKET_LEN {
            return Err(TicketError::Length {
                expected: TICKET_LEN,
                got: text.len() / 2,
            });
        }
        let bytes = hex::decode(text).map_err(|e| TicketError::NotHex(e.to_string()))?;
        Self::decode(&bytes)
    }

    /// Is this ticket signed by `coordinator`, for `host`, and valid at `now`?
    pub fn verify(
        &self,
        coordinator: &IdentityId,
        host: &IdentityId,
        now: u64,
    ) -> Result<(), TicketError> {
        if self.coordinator != *coordinator {
            return Err(TicketError::OtherCoordinator {
                got: self.coordinator.to_string(),
                pinned: coordinator.to_string(),
            });
        }
        let signed = Self::signed_bytes(&self.member, &self.host, self.not_before, self.expires);
        verify_strict(coordinator, &signed, &self.signature)
            .map_err(|()| TicketError::BadSignature)?;
        if self.host != *host {
            return Err(TicketError::OtherHost {
                got: self.host.to_string(),
                me: host.to_string(),
            });
        }
        if now >= self.expires {
            return Err(TicketError::Expired {
                expires: self.expires,
                now,
            });
        }
        if self.not_before > now.saturating_add(CLOCK_SKEW_SECS) {
            return Err(TicketError::NotYetValid {
                not_before: self.not_before,
                now,
            });
        }
        Ok(())
    }
}

fn verify_strict(key: &IdentityId, msg: &[u8], signature: &[u8; 64]) -> Result<(), ()> {
    let key = VerifyingKey::from_bytes(&key.0).map_err(|_| ())?;
    key.verify_strict(msg, &Signature::from_bytes(signature))
        .map_err(|_| ())
}

fn proof_bytes(ticket: &[u8; TICKET_LEN], time: u64, nonce: &[u8; NONCE_LEN]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PROOF_DOMAIN.len() + 32 + 32 + 8 + NONCE_LEN);
    out.extend_from_slice(PROOF_DOMAIN);
    out.extend_from_slice(blake3::hash(ticket).as_bytes());
    // The host is inside the ticket already; signing it again keeps the
    // proof's meaning obvious without reading the ticket format.
    out.extend_from_slice(&ticket[32..64]);
    out.extend_from_slice(&time.to_be_bytes());
    out.extend_from_slice(nonce);
    out
}

/// The `TCKT` body a client sends: `ticket`, and a proof made at `now` with
/// `nonce` (fresh random bytes) by `member`, the key the ticket names.
pub fn present(
    ticket: &Ticket,
    member: &Identity,
    now: u64,
    nonce: [u8; NONCE_LEN],
) -> [u8; PASS_LEN] {
    let encoded = ticket.encode();
    let signature = member.sign(&proof_bytes(&encoded, now, &nonce));
    let mut out = [0u8; PASS_LEN];
    out[..TICKET_LEN].copy_from_slice(&encoded);
    out[TICKET_LEN..TICKET_LEN + 8].copy_from_slice(&now.to_be_bytes());
    out[TICKET_LEN + 8..TICKET_LEN + 8 + NONCE_LEN].copy_from_slice(&nonce);
    out[TICKET_LEN + 8 + NONCE_LEN..].copy_from_slice(&signature);
    out
}

/// A pass that checked out. The caller still has to refuse a replayed
/// `nonce` (the daemon's memory of recent proofs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    pub member: IdentityId,
    pub proof_time: u64,
    pub nonce: [u8; NONCE_LEN],
}

/// Check a `TCKT` body at the daemon `host`, whose coordinator's key is
/// `coordinator`, at `now`.
pub fn check_pass(
    pass: &[u8],
    coordinator: &IdentityId,
    host: &IdentityId,
    now: u64,
) -> Result<Admission, TicketError> {
    let pass: &[u8; PASS_LEN] = pass.try_into().map_err(|_| TicketError::Length {
        expected: PASS_LEN,
        got: pass.len(),
    })?;
    let encoded: [u8; TICKET_LEN] = pass[..TICKET_LEN].try_into().unwrap_or([0; TICKET_LEN]);
    let ticket = Ticket::decode(&encoded)?;
    ticket.verify(coordinator, host, now)?;
    let proof = &pass[TICKET_LEN..];
    let proof_time = u64::from_be_bytes(proof[..8].try_into().unwrap_or([0; 8]));
    let nonce: [u8; NONCE_LEN] = proof[8..8 + NONCE_LEN].try_into().unwrap_or([0; NONCE_LEN]);
    let signature: [u8; 64] = proof[8 + NONCE_LEN..].try_into().unwrap_or([0; 64]);
    verify_strict(
        &ticket.member,
        &proof_bytes(&encoded, proof_time, &nonce),
        &signature,
    )
    .map_err(|()| TicketError::BadProof)?;
    if proof_time.abs_diff(now) > PROOF_WINDOW_SECS {
        return Err(TicketError::StaleProof {
            made: proof_time,
            now,
        });
    }
    Ok(Admission {
        member: ticket.member,
        proof_time,
        nonce,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    struct World {
        coordinator: Identity,
        member: Identity,
        host: IdentityId,
    }

    fn world() -> World {
        World {
            coordinator: Identity::from_seed([1; 32]),
            member: Identity::from_seed([2; 32]),
            host: Identity::from_seed([3; 32]).id(),
        }
    }

    fn good(w: &World) -> Ticket {
        Ticket::issue(&w.coordinator, w.member.id(), w.host, NOW, 3600)
    }

    #[test]
    fn encode_decode_and_hex_round_trip() {
        let w = world();
        let t = good(&w);
        assert_eq!(Ticket::decode(&t.encode()).unwrap(), t);
        assert_eq!(Ticket::from_hex(&t.to_hex()).unwrap(), t);
        assert!(matches!(
            Ticket::from_hex(&t.to_hex()[2..]),
            Err(TicketError::Length { .. })
        ));
        let not_hex = "zz".repeat(TICKET_LEN);
        assert!(matches!(
            Ticket::from_hex(&not_hex),
            Err(TicketError::NotHex(_))
        ));
    }

    /// Every way a pass can be wrong, each refused for its own reason.
    #[test]
    fn passes_table() {
        let w = world();
        let c = w.coordinator.id();
        let pass_of = |t: &Ticket, by: &Identity, at: u64| present(t, by, at, [7; NONCE_LEN]);
        let other_key = Identity::from_seed([9; 32]);
        let mut forged = good(&w);
        forged.expires += 1; // the signature covered the old expiry
                             // (name, pass, the daemon's clock, Ok or words of the refusal)
        type Case = (&'static str, Vec<u8>, u64, Result<(), &'static str>);
        let cases: Vec<Case> = vec![
            (
                "good",
                pass_of(&good(&w), &w.member, NOW).to_vec(),
                NOW,
                Ok(()),
            ),
            (
                "good, proof a little late",
                pass_of(&good(&w), &w.member, NOW).to_vec(),
                NOW + PROOF_WINDOW_SECS,
                Ok(()),
            ),
            (
                "expired",
                pass_of(&good(&w), &w.member, NOW + 3600).to_vec(),
                NOW + 3600,
                Err("expired"),
            ),
            (
                "not yet valid",
                pass_of(
                    &Ticket::issue_between(
                        &w.coordinator,
                        w.member.id(),
                        w.host,
                        NOW + 3600,
                        NOW + 7200,
                    ),
                    &w.member,
                    NOW,
                )
                .to_vec(),
                NOW,
                Err("valid only from"),
            ),
            (
                "forged (altered after signing)",
                pass_of(&forged, &w.member, NOW).to_vec(),
                NOW,
                Err("signature does not verify"),
            ),
            (
                "signed by another coordinator",
                pass_of(
                    &Ticket::issue(&other_key, w.member.id(), w.host, NOW, 3600),
                    &w.member,
                    NOW,
                )
                .to_vec(),
                NOW,
                Err("not by this daemon's coordinator"),
            ),
            (
                "for another host",
                pass_of(
                    &Ticket::issue(&w.coordinator, w.member.id(), other_key.id(), NOW, 3600),
                    &w.member,
                    NOW,
                )
                .to_vec(),
                NOW,
                Err("not for this one"),
            ),
            (
                "leaked ticket, proof by someone else",
                pass_of(&good(&w), &other_key, NOW).to_vec(),
                NOW,
                Err("proof of the ticket's member key"),
            ),
            (
                "stale proof",
                pass_of(&good(&w), &w.member, NOW).to_vec(),
                NOW + PROOF_WINDOW_SECS + 1,
                Err("too far from now"),
            ),
            (
                "truncated",
                pass_of(&good(&w), &w.member, NOW)[..PASS_LEN - 1].to_vec(),
                NOW,
                Err("bytes, not"),
            ),
            (
                "oversized",
                [pass_of(&good(&w), &w.member, NOW).as_slice(), &[0]].concat(),
                NOW,
                Err("bytes, not"),
            ),
            ("empty", Vec::new(), NOW, Err("bytes, not")),
            (
                "zeros",
                vec![0; PASS_LEN],
                NOW,
                Err("not by this daemon's coordinator"),
            ),
        ];
        for (name, pass, now, want) in cases {
            let got = check_pass(&pass, &c, &w.host, now);
            match (want, got) {
                (Ok(()), Ok(a)) => {
                    assert_eq!(a.member, w.member.id(), "{name}");
                    assert_eq!(a.nonce, [7; NONCE_LEN], "{name}");
                }
                (Err(words), Err(e)) => {
                    assert!(e.to_string().contains(words), "{name}: {e}")
                }
                (want, got) => panic!("{name}: wanted {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn a_proof_is_bound_to_its_nonce_and_time() {
        let w = world();
        let mut pass = present(&good(&w), &w.member, NOW, [1; NONCE_LEN]);
        pass[TICKET_LEN + 8] ^= 1; // another nonce under the same signature
        assert_eq!(
            check_pass(&pass, &w.coordinator.id(), &w.host, NOW),
            Err(TicketError::BadProof)
        );
        let mut pass = present(&good(&w), &w.member, NOW, [1; NONCE_LEN]);
        pass[TICKET_LEN + 7] ^= 1; // another time
        assert_eq!(
            check_pass(&pass, &w.coordinator.id(), &w.host, NOW),
            Err(TicketError::BadProof)
        );
    }
}
