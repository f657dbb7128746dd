//! The verified result cache's two rules, sans-I/O (issue 16; the index and
//! the stores build on them): what a job's key is, and who may make an entry.
//!
//! * **Key**: blake3 over the toolchain fingerprint, the canonical server
//!   argv and the blake3 of the preprocessed input, each length-prefixed and
//!   under a domain string, so no two different jobs share a key by
//!   concatenation. A key says nothing of the source to anyone who does not
//!   already hold the same preprocessed input.
//! * **Entry**: among strangers one host's word is worth nothing, so an entry
//!   needs the agreement of at least two *established* hosts of distinct
//!   owners and distinct networks in one verified dispatch, or an
//!   adjudication's ruling (unanimous referees, already unrelated to both
//!   sides). A host of the member's own counts as nobody's word but the
//!   member's: it never makes an entry others will trust.

use super::standing::Standing;

/// Domain separation for cache keys (a key can never be mistaken for another
/// blake3 the network computes, such as an input hash).
const KEY_DOMAIN: &str = "dportage result cache key v1";

/// The key of one job in the shared cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    /// The key of a job: `fingerprint` is the toolchain id both hosts were
    /// paired by, `argv` the canonical argv sent to every host, `input` the
    /// blake3 of the preprocessed source they got.
    pub fn of(fingerprint: &str, argv: &[String], input: &[u8; 32]) -> CacheKey {
        let mut h = blake3::Hasher::new_derive_key(KEY_DOMAIN);
        let mut field = |bytes: &[u8]| {
            h.update(&(bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        field(fingerprint.as_bytes());
        field(&(argv.len() as u64).to_le_bytes());
        for a in argv {
            field(a.as_bytes());
        }
        field(input);
        CacheKey(*h.finalize().as_bytes())
    }

    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }
}

/// One host that returned the agreed result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Witness<O, N> {
    pub owner: O,
    pub network: N,
    pub standing: Standing,
    /// A host of the member's own `DISTCC_HOSTS`, not of the network's list.
    pub own: bool,
}

/// How the result was decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<O, N> {
    /// The hosts of one verified dispatch agreed.
    Agreed(Vec<Witness<O, N>>),
    /// An adjudication's referees ruled (they are chosen established and
    /// unrelated to the dispute by the coordinator itself).
    Adjudicated,
}

/// Why a result may not enter the shared cache.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoEntry {
    #[error("only {0} established host(s) of the network agreed; an entry needs two")]
    TooFewEstablished(usize),
    #[error("the agreeing established hosts share an owner or a network")]
    Related,
}

/// Hosts that must agree for an entry.
pub const WITNESSES_NEEDED: usize = 2;

/// Whether a result may enter the shared cache: two established hosts of
/// the network, pairwise of distinct owners and networks, among those that
/// agreed; or an adjudication's ruling.
pub fn may_enter<O: Eq, N: Eq>(decision: &Decision<O, N>) -> Result<(), NoEntry> {
    let witnesses = match decision {
        Decision::Adjudicated => return Ok(()),
        Decision::Agreed(w) => w,
    };
    let counted: Vec<&Witness<O, N>> = witnesses
        .iter()
        .filter(|w| !w.own && w.standing == Standing::Established)
        .collect();
    if counted.len() < WITNESSES_NEEDED {
        return Err(NoEntry::TooFewEstablished(counted.len()));
    }
    // Some two of them unrelated to each other suffice.
    let unrelated = counted.iter().enumerate().any(|(i, a)| {
        counted[i + 1..]
            .iter()
            .any(|b| a.owner != b.owner && a.network != b.network)
    });
    if unrelated {
        Ok(())
    } else {
        Err(NoEntry::Related)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(owner: u8, network: u8, standing: Standing) -> Witness<u8, u8> {
        Witness {
            owner,
            network,
            standing,
            own: false,
        }
    }

    const E: Standing = Standing::Established;
    const P: Standing = Standing::Probationary;

    #[test]
    fn entry_rule_table() {
        let own = Witness {
            own: true,
            ..w(9, 9, E)
        };
        type Row = (Vec<Witness<u8, u8>>, Result<(), NoEntry>);
        let table: Vec<Row> = vec![
            (vec![w(1, 1, E)], Err(NoEntry::TooFewEstablished(1))),
            (vec![w(1, 1, E), w(2, 2, E)], Ok(())),
            (
                vec![w(1, 1, E), w(2, 2, P)],
                Err(NoEntry::TooFewEstablished(1)),
            ),
            (
                vec![w(1, 1, P), w(2, 2, P), w(3, 3, P)],
                Err(NoEntry::TooFewEstablished(0)),
            ),
            (vec![w(1, 1, E), w(1, 2, E)], Err(NoEntry::Related)),
            (vec![w(1, 1, E), w(2, 1, E)], Err(NoEntry::Related)),
            (vec![w(1, 1, E), w(1, 2, E), w(3, 3, E)], Ok(())),
            (
                vec![w(1, 1, E), own.clone()],
                Err(NoEntry::TooFewEstablished(1)),
            ),
            (vec![own.clone(), own], Err(NoEntry::TooFewEstablished(0))),
        ];
        for (witnesses, want) in table {
            assert_eq!(
                may_enter(&Decision::Agreed(witnesses.clone())),
                want,
                "{witnesses:?}"
            );
        }
        assert_eq!(may_enter::<u8, u8>(&Decision::Adjudicated), Ok(()));
    }

    #[test]
    fn keys_separate_every_field() {
        let input = [7u8; 32];
        let argv = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let base = CacheKey::of("fp", &argv(&["gcc", "-O2", "-c"]), &input);
        assert_eq!(
            base,
            CacheKey::of("fp", &argv(&["gcc", "-O2", "-c"]), &input)
        );
        let others = [
            CacheKey::of("fq", &argv(&["gcc", "-O2", "-c"]), &input),
            CacheKey::of("fp", &argv(&["gcc", "-O3", "-c"]), &input),
            CacheKey::of("fp", &argv(&["gcc", "-O2", "-c"]), &[8u8; 32]),
            // Concatenation cannot collide: the fields are length-prefixed.
            CacheKey::of("fp", &argv(&["gcc-O2", "-c"]), &input),
            CacheKey::of("fpgcc", &argv(&["-O2", "-c"]), &input),
        ];
        for o in others {
            assert_ne!(o, base);
        }
        assert_ne!(base.0, input, "a key is not the input hash");
        assert_eq!(base.to_hex().len(), 64);
    }
}
