//! The verified result cache's contract (issue 16): what a daemon claims,
//! what a member looks up, disputes and audits, and the `CGET` fetch. The
//! rules themselves live in [`crate::trust::cache_entry`]; the index in the
//! coordinator, the byte stores on hosts and members.
//!
//! * **Claims** (`POST /v1/cache/claims`, signed by a daemon): after a
//!   successful compile of a ticketed job a host computes the job's key
//!   itself (its own toolchain's fingerprint, the argv and the input it
//!   received), keeps the reply, and claims "key → result". A member never
//!   tells the coordinator what a key's result is: what would stop a liar's
//!   claim from pairing honest hosts' work with another input's key?
//!   Entries are made when claims of established hosts of distinct owners
//!   and networks agree ([`crate::trust::cache_entry::may_enter`]).
//! * **Lookup** (`POST /v1/cache/lookup`, signed by a member): the answer is
//!   signed by the coordinator like a host list ([`SignedCacheAnswer`]), names
//!   the key it answers, the member it was made for and when, and carries a
//!   fresh ticket for each holder.
//! * **Fetch**: a `TCKT` pass, then `CGET` with the 32 raw bytes of the
//!   result hash, to a holder; it answers with the stored distcc reply
//!   (protocol 2) or closes the connection without a byte. The member checks
//!   [`result_hash_of`](super::api::result_hash_of) of what it got against
//!   the entry before anything is written.
//! * **Dispute** (`POST /v1/cache/dispute`): a spot check of a hit got a
//!   different verified result; the coordinator checks the key is the hash of
//!   what the member says, asks for the input (`PUT /v1/evidence/<hash>`)
//!   and re-runs it on referees. An entry they rule wrong is withdrawn and its
//!   witnesses struck: their own signed claims are the evidence.
//! * **Withdrawn** (`POST /v1/cache/withdrawn`): which of the keys a member
//!   fetched were withdrawn since (`dportage cache audit`).

use serde::{Deserialize, Serialize};

use super::api::{ApiValidationError, HostListError};
use super::identity::{Identity, IdentityId};

/// Claims in one `POST /v1/cache/claims`.
pub const MAX_CLAIMS: usize = 256;
/// Keys in one `POST /v1/cache/withdrawn`.
pub const MAX_AUDIT_KEYS: usize = 1024;
/// Holders named in one lookup answer.
pub const MAX_HOLDERS: usize = 4;
/// Arguments of a disputed job (as in a mismatch report).
pub const MAX_DISPUTE_ARGS: usize = 512;
/// How long a member's client trusts a lookup answer (it asks per job, so
/// only clock skew and a slow fetch need room).
pub const ANSWER_MAX_AGE_SECS: u64 = 600;
/// The largest stored reply a host serves or a member accepts by `CGET`
/// (the client's own bound on a reply's object is the same order).
pub const MAX_STORED_REPLY: u64 = 256 * 1024 * 1024;

pub const CLAIMS_PATH: &str = "/v1/cache/claims";
pub const LOOKUP_PATH: &str = "/v1/cache/lookup";
pub const DISPUTE_PATH: &str = "/v1/cache/dispute";
pub const WITHDRAWN_PATH: &str = "/v1/cache/withdrawn";

/// One host's statement: it compiled the job of `key` and got `result`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheClaim {
    /// [`crate::trust::cache_entry::CacheKey`], 64 hex.
    pub key: String,
    /// The fingerprint id of the toolchain that compiled it (what referees
    /// must serve to re-run it).
    pub toolchain: String,
    /// [`super::api::result_hash`] of the reply: object and status.
    pub result: String,
    /// Size of the stored reply in bytes.
    pub bytes: u64,
}

/// `POST /v1/cache/claims`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheClaims {
    pub claims: Vec<CacheClaim>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheClaimsAck {
    /// Claims taken (pending or joining an entry).
    pub accepted: u32,
    /// Entries these claims completed.
    pub entries_made: u32,
}

/// `POST /v1/cache/lookup`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheLookup {
    pub key: String,
}

/// A host that holds an entry's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheHolder {
    pub id: IdentityId,
    pub host: String,
    pub port: u16,
    /// Hex ticket (`network::ticket`) for the member who asked, when the
    /// holder takes tickets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
}

/// What the coordinator answers to a lookup (inside [`SignedCacheAnswer`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheAnswer {
    /// The key asked for: an answer is not reusable for another key.
    pub key: String,
    /// The member it was made for.
    pub issued_to: IdentityId,
    /// Unix seconds.
    pub issued_at: u64,
    /// `None`: no entry (or a withdrawn one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<CacheEntryView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntryView {
    /// [`super::api::result_hash`] the fetched reply must have.
    pub result: String,
    /// Live, unblacklisted hosts with the bytes, at most [`MAX_HOLDERS`].
    pub holders: Vec<CacheHolder>,
    /// Unix seconds when the entry was made.
    pub made_at: u64,
}

/// The lookup answer as the exact JSON text the coordinator signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCacheAnswer {
    /// JSON of a [`CacheAnswer`], byte for byte as signed.
    pub answer: String,
    pub coordinator: IdentityId,
    /// ed25519 (hex) over [`SignedCacheAnswer::signed_bytes`].
    pub signature: String,
}

impl SignedCacheAnswer {
    pub fn signed_bytes(answer: &str) -> Vec<u8> {
        let mut out = b"dportage cache answer v1\n".to_vec();
        out.extend_from_slice(answer.as_bytes());
        out
    }

    pub fn sign(coordinator: &Identity, answer: &CacheAnswer) -> Self {
        let answer = serde_json::to_string(answer).unwrap_or_default();
        let signature = hex::encode(coordinator.sign(&Self::signed_bytes(&answer)));
        SignedCacheAnswer {
            answer,
            coordinator: coordinator.id(),
            signature,
        }
    }

    /// The answer, once it verifies under the `pinned` coordinator key and
    /// is for `key`, for `me`, and fresh at `now`.
    pub fn open(
        &self,
        pinned: &IdentityId,
        key: &str,
        me: &IdentityId,
        now: u64,
    ) -> Result<CacheAnswer, HostListError> {
        if *pinned != self.coordinator {
            return Err(HostListError::WrongCoordinator {
                got: self.coordinator.to_string(),
                pinned: pinned.to_string(),
            });
        }
        let vk = ed25519_dalek::VerifyingKey::from_bytes(&self.coordinator.0)
            .map_err(|_| HostListError::BadSignature)?;
        let mut sig = [0u8; 64];
        hex::decode_to_slice(&self.signature, &mut sig).map_err(|_| HostListError::BadSignature)?;
        vk.verify_strict(
            &Self::signed_bytes(&self.answer),
            &ed25519_dalek::Signature::from_bytes(&sig),
        )
        .map_err(|_| HostListError::BadSignature)?;
        let answer: CacheAnswer = serde_json::from_str(&self.answer)
            .map_err(|e| HostListError::Malformed(e.to_string()))?;
        if answer.key != key {
            return Err(HostListError::Malformed(format!(
                "the answer is for key {}, not {key}",
                answer.key
            )));
        }
        if answer.issued_to != *me {
            return Err(HostListError::NotMine {
                issued_to: answer.issued_to.to_string(),
                me: me.to_string(),
            });
        }
        let age_secs = now.abs_diff(answer.issued_at);
        if age_secs > ANSWER_MAX_AGE_SECS {
            return Err(HostListError::Stale {
                age_secs,
                max_secs: ANSWER_MAX_AGE_SECS,
            });
        }
        Ok(answer)
    }
}

/// `POST /v1/cache/dispute`: a member's spot check of a hit got `result`
/// from a verified dispatch, and the entry says otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheDispute {
    pub key: String,
    /// Fingerprint id of the job's toolchain.
    pub toolchain: String,
    /// The canonical argv every host got.
    pub args: Vec<String>,
    /// blake3 (hex) of the preprocessed input.
    pub input_hash: String,
    /// What the spot check's hosts agreed on ([`super::api::result_hash`]).
    pub result: String,
    /// Unix seconds, client clock.
    pub time: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheDisputeAck {
    /// Upload the input with `PUT /v1/evidence/<input_hash>`.
    pub evidence_wanted: bool,
    /// The entry is withdrawn already (by this dispute or an earlier one).
    pub withdrawn: bool,
}

/// `POST /v1/cache/withdrawn`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheWithdrawnQuery {
    pub keys: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WithdrawnEntry {
    pub key: String,
    /// The result the entry wrongly gave.
    pub result: String,
    /// Unix seconds.
    pub at: u64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheWithdrawnResponse {
    pub withdrawn: Vec<WithdrawnEntry>,
}

/// Is `s` 64 lowercase hex digits (a key, a result hash, an input hash)?
pub fn is_hash_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn check_hash(field: &str, s: &str) -> Result<(), ApiValidationError> {
    if is_hash_hex(s) {
        Ok(())
    } else {
        Err(ApiValidationError::NotHash {
            field: field.to_owned(),
        })
    }
}

impl CacheClaims {
    pub fn validate(&self) -> Result<(), ApiValidationError> {
        if self.claims.len() > MAX_CLAIMS {
            return Err(ApiValidationError::TooMany {
                what: "claims",
                count: self.claims.len(),
                max: MAX_CLAIMS,
            });
        }
        for (i, c) in self.claims.iter().enumerate() {
            check_hash(&format!("claims[{i}].key"), &c.key)?;
            check_hash(&format!("claims[{i}].result"), &c.result)?;
            if !crate::fingerprint::is_fingerprint_id(&c.toolchain) {
                return Err(ApiValidationError::NotFingerprint {
                    field: format!("claims[{i}].toolchain"),
                });
            }
        }
        Ok(())
    }
}

impl CacheLookup {
    pub fn validate(&self) -> Result<(), ApiValidationError> {
        check_hash("key", &self.key)
    }
}

impl CacheDispute {
    pub fn validate(&self) -> Result<(), ApiValidationError> {
        check_hash("key", &self.key)?;
        check_hash("input_hash", &self.input_hash)?;
        check_hash("result", &self.result)?;
        if !crate::fingerprint::is_fingerprint_id(&self.toolchain) {
            return Err(ApiValidationError::NotFingerprint {
                field: "toolchain".to_owned(),
            });
        }
        if self.args.len() > MAX_DISPUTE_ARGS {
            return Err(ApiValidationError::TooMany {
                what: "args",
                count: self.args.len(),
                max: MAX_DISPUTE_ARGS,
            });
        }
        Ok(())
    }

    /// Is `key` the key of what this dispute says the job was?
    pub fn key_matches(&self) -> bool {
        let mut input = [0u8; 32];
        if hex::decode_to_slice(&self.input_hash, &mut input).is_err() {
            return false;
        }
        crate::trust::cache_entry::CacheKey::of(&self.toolchain, &self.args, &input).to_hex()
            == self.key
    }
}

impl CacheWithdrawnQuery {
    pub fn validate(&self) -> Result<(), ApiValidationError> {
        if self.keys.len() > MAX_AUDIT_KEYS {
            return Err(ApiValidationError::TooMany {
                what: "keys",
                count: self.keys.len(),
                max: MAX_AUDIT_KEYS,
            });
        }
        for (i, k) in self.keys.iter().enumerate() {
            check_hash(&format!("keys[{i}]"), k)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_open_only_for_their_key_member_and_time() {
        let coord = Identity::generate();
        let me = Identity::generate().id();
        let key = "ab".repeat(32);
        let answer = CacheAnswer {
            key: key.clone(),
            issued_to: me,
            issued_at: 1000,
            entry: None,
        };
        let signed = SignedCacheAnswer::sign(&coord, &answer);
        assert_eq!(signed.open(&coord.id(), &key, &me, 1100), Ok(answer));
        let other = Identity::generate();
        assert!(signed.open(&other.id(), &key, &me, 1100).is_err());
        assert!(signed
            .open(&coord.id(), &"cd".repeat(32), &me, 1100)
            .is_err());
        assert!(signed.open(&coord.id(), &key, &other.id(), 1100).is_err());
        assert!(signed.open(&coord.id(), &key, &me, 1000 + 3600).is_err());
        let mut forged = signed.clone();
        forged.answer = forged.answer.replace("1000", "1001");
        assert!(forged.open(&coord.id(), &key, &me, 1100).is_err());
    }

    #[test]
    fn disputes_must_name_their_own_key() {
        let input = [3u8; 32];
        let args = vec!["gcc".to_string(), "-c".into(), "x.i".into()];
        let toolchain = "f".repeat(64);
        let key = crate::trust::cache_entry::CacheKey::of(&toolchain, &args, &input).to_hex();
        let mut d = CacheDispute {
            key,
            toolchain,
            args,
            input_hash: hex::encode(input),
            result: "0".repeat(64),
            time: 0,
        };
        assert!(d.validate().is_ok());
        assert!(d.key_matches());
        d.args.push("-O2".into());
        assert!(!d.key_matches());
        d.key = "XYZ".into();
        assert!(d.validate().is_err());
    }

    #[test]
    fn claims_are_bounded_and_checked() {
        let good = CacheClaim {
            key: "a".repeat(64),
            toolchain: "b".repeat(64),
            result: "c".repeat(64),
            bytes: 10,
        };
        assert!(CacheClaims {
            claims: vec![good.clone()]
        }
        .validate()
        .is_ok());
        let too_many = CacheClaims {
            claims: vec![good.clone(); MAX_CLAIMS + 1],
        };
        assert!(too_many.validate().is_err());
        let bad = CacheClaim {
            result: "not hex".into(),
            ..good
        };
        assert!(CacheClaims { claims: vec![bad] }.validate().is_err());
    }
}
