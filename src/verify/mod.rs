//! The verdict of redundant dispatch, sans-I/O: digests of results, the
//! normalisation of diagnostics, and the vote that decides which result (if any)
//! may be written.
//!
//! Rules, and why:
//! * Only the object bytes and the exit status vote. Diagnostics legitimately
//!   differ between honest hosts (temp-file names, quote styles, a distccd log
//!   line), so they are normalised and compared only to be recorded.
//! * Failures to compile *somewhere* (connection lost, refusal, a signal, one of
//!   distcc's own exit codes 100–127) are not votes: the host is replaced.
//! * A result is accepted when at least `required` hosts returned it and they
//!   are a strict majority of all votes: one liar can never outvote, and an
//!   honest pair is never overruled by a single dissenter.
//! * The local arbiter compiles the very `.i` the hosts got and is trusted, but
//!   a host is only called a liar by it when another remote host agrees with the
//!   arbiter; otherwise the local toolchain may simply differ from the pool's.

use std::fmt;

pub mod scheduler;

/// What one host (or the local arbiter) produced for a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResultDigest {
    /// Raw wait status.
    pub status: u32,
    /// blake3 of the object bytes (of nothing when the compile failed).
    pub object: [u8; 32],
    /// blake3 of the normalised diagnostics (advisory only).
    pub diagnostics: [u8; 32],
}

impl ResultDigest {
    pub fn of(status: u32, object: &[u8], stderr: &[u8]) -> Self {
        Self {
            status,
            object: *blake3::hash(object).as_bytes(),
            diagnostics: *blake3::hash(&normalize_diagnostics(stderr)).as_bytes(),
        }
    }

    /// The part that votes: exit status and object.
    fn ballot_key(&self) -> BallotKey {
        (self.status, self.object)
    }

    /// Would these two results count as the same vote?
    pub fn same_vote(&self, other: &ResultDigest) -> bool {
        self.ballot_key() == other.ballot_key()
    }

    /// Short hex of the object hash, for messages.
    pub fn short(&self) -> String {
        hex(&self.object[..6])
    }

    pub fn object_hex(&self) -> String {
        hex(&self.object)
    }
}

impl fmt::Display for ResultDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "status {:#x}, object {}", self.status, self.short())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Exit status and object hash: what a vote is about.
type BallotKey = (u32, [u8; 32]);

/// Is this wait status a result of compiling (a vote), or a failure of the
/// host to compile at all (replace the host)?
pub fn status_is_vote(status: u32) -> bool {
    let signal = status & 0x7f;
    let code = (status >> 8) & 0xff;
    signal == 0 && code < 100
}

/// The shell's exit code for a raw wait status.
pub fn exit_code_of_status(status: u32) -> i32 {
    let signal = (status & 0x7f) as i32;
    if signal == 0 {
        ((status >> 8) & 0xff) as i32
    } else {
        128 + signal
    }
}

/// Normalise diagnostics so honest hosts' stderr compares equal: drop server log
/// lines, name temp files and the assembler's stdin the same way, fold
/// typographic quotes, strip terminal escapes.
pub fn normalize_diagnostics(stderr: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(stderr);
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        if line.starts_with("distccd[") || line.starts_with("dportage:") {
            continue;
        }
        out.push_str(&normalize_line(line));
    }
    out.into_bytes()
}

fn normalize_line(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("{standard input}") {
            out.push_str("<tmp>");
            rest = after;
            continue;
        }
        if let Some(len) = temp_file_len(rest) {
            out.push_str("<tmp>");
            rest = &rest[len..];
            continue;
        }
        if let Some(after) = rest.strip_prefix('\u{1b}') {
            // CSI sequences: ESC [ params final-byte.
            let after = after.strip_prefix('[').unwrap_or(after);
            let end = after
                .char_indices()
                .find(|(_, c)| c.is_ascii_alphabetic())
                .map(|(i, c)| i + c.len_utf8())
                .unwrap_or(after.len());
            rest = &after[end..];
            continue;
        }
        let mut chars = rest.chars();
        let c = chars.next().unwrap_or_default();
        out.push(match c {
            '\u{2018}' | '\u{2019}' | '\u{201c}' | '\u{201d}' => '\'',
            other => other,
        });
        rest = chars.as_str();
    }
    out
}

/// Length of a gcc temp-file path at the start of `s`: `/tmp/ccXXXXXX.s` (any
/// directory, `cc` + 6 alphanumerics + an extension).
fn temp_file_len(s: &str) -> Option<usize> {
    if !s.starts_with('/') {
        return None;
    }
    let end = s
        .find(|c: char| c.is_whitespace() || c == ':' || c == '\'' || c == '"')
        .unwrap_or(s.len());
    let path = &s[..end];
    let name = path.rsplit('/').next()?;
    let (stem, ext) = name.split_once('.')?;
    let random = stem.strip_prefix("cc")?;
    let plausible = random.len() == 6
        && random.chars().all(|c| c.is_ascii_alphanumeric())
        && !ext.is_empty()
        && ext.chars().all(|c| c.is_ascii_alphanumeric());
    plausible.then_some(end)
}

/// One vote: which host said what. Hosts are named by whatever the caller uses
/// to tell them apart (their entries as written, or the scheduler's ids).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vote<H = String> {
    pub host: H,
    pub digest: ResultDigest,
}

/// The outcome of counting the votes so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict<H = String> {
    /// `digest` has the required agreement; `dissenters` returned something else.
    Agreed {
        digest: ResultDigest,
        agreeing: Vec<H>,
        dissenters: Vec<H>,
    },
    /// Not decided yet: ask `more` further hosts (at least).
    Undecided { more: usize },
}

/// Count `votes` for a job that needs `required` agreeing hosts.
pub fn tally<H: Clone>(votes: &[Vote<H>], required: usize) -> Verdict<H> {
    let required = required.max(1);
    let mut groups: Vec<(BallotKey, Vec<&Vote<H>>)> = Vec::new();
    for vote in votes {
        let key = vote.digest.ballot_key();
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(vote),
            None => groups.push((key, vec![vote])),
        }
    }
    let total = votes.len();
    if let Some((_, winners)) = groups
        .iter()
        .find(|(_, members)| members.len() >= required && members.len() * 2 > total)
    {
        let digest = winners[0].digest;
        let agreeing = winners.iter().map(|v| v.host.clone()).collect();
        let dissenters = votes
            .iter()
            .filter(|v| v.digest.ballot_key() != digest.ballot_key())
            .map(|v| v.host.clone())
            .collect();
        return Verdict::Agreed {
            digest,
            agreeing,
            dissenters,
        };
    }
    // The largest group needs to reach `required` and a strict majority.
    let best = groups.iter().map(|(_, m)| m.len()).max().unwrap_or(0);
    let for_required = required.saturating_sub(best);
    // With k more votes all joining the best group: best + k > (total + k) / 2
    // ⇔ k > total - 2·best.
    let for_majority = (total + 1).saturating_sub(2 * best);
    Verdict::Undecided {
        more: for_required.max(for_majority).max(1),
    }
}

/// The local arbiter's judgement over the remote votes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arbitration<H = String> {
    /// Remote hosts that disagree with the arbiter and may be called liars
    /// (empty when no remote host agreed with the arbiter).
    pub liars: Vec<H>,
    /// Remote hosts that agree with the arbiter.
    pub honest: Vec<H>,
    /// No remote host agreed: the local toolchain may differ from the pool's.
    pub local_toolchain_suspect: bool,
}

/// Judge remote `votes` against the local arbiter's `local` result.
pub fn arbitrate<H: Clone>(votes: &[Vote<H>], local: &ResultDigest) -> Arbitration<H> {
    let key = local.ballot_key();
    let honest: Vec<H> = votes
        .iter()
        .filter(|v| v.digest.ballot_key() == key)
        .map(|v| v.host.clone())
        .collect();
    let disagreeing: Vec<H> = votes
        .iter()
        .filter(|v| v.digest.ballot_key() != key)
        .map(|v| v.host.clone())
        .collect();
    if honest.is_empty() {
        Arbitration {
            liars: Vec::new(),
            honest,
            local_toolchain_suspect: !disagreeing.is_empty(),
        }
    } else {
        Arbitration {
            liars: disagreeing,
            honest,
            local_toolchain_suspect: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(status: u32, object: &[u8]) -> ResultDigest {
        ResultDigest::of(status, object, b"")
    }
    fn v(host: &str, digest: ResultDigest) -> Vote {
        Vote {
            host: host.into(),
            digest,
        }
    }

    #[test]
    fn honest_pair_agrees() {
        let good = d(0, b"obj");
        match tally(&[v("a", good), v("b", good)], 2) {
            Verdict::Agreed {
                digest,
                agreeing,
                dissenters,
            } => {
                assert_eq!(digest, good);
                assert_eq!(agreeing, ["a", "b"]);
                assert!(dissenters.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn one_vote_is_never_enough_for_two() {
        assert_eq!(
            tally(&[v("a", d(0, b"x"))], 2),
            Verdict::Undecided { more: 1 }
        );
    }

    #[test]
    fn disagreement_needs_a_third_and_names_the_odd_host() {
        let good = d(0, b"obj");
        let bad = d(0, b"trojan");
        assert_eq!(
            tally(&[v("a", good), v("liar", bad)], 2),
            Verdict::Undecided { more: 1 }
        );
        match tally(&[v("a", good), v("liar", bad), v("c", good)], 2) {
            Verdict::Agreed {
                digest, dissenters, ..
            } => {
                assert_eq!(digest, good);
                assert_eq!(dissenters, ["liar"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn three_different_answers_stay_undecided() {
        let votes = [v("a", d(0, b"1")), v("b", d(0, b"2")), v("c", d(0, b"3"))];
        assert!(matches!(tally(&votes, 2), Verdict::Undecided { .. }));
    }

    #[test]
    fn status_alone_is_a_disagreement() {
        let ok = d(0, b"obj");
        let failed = d(0x100, b"");
        assert!(matches!(
            tally(&[v("a", ok), v("b", failed)], 2),
            Verdict::Undecided { .. }
        ));
    }

    #[test]
    fn agreeing_compile_errors_are_a_verdict() {
        let err = d(0x100, b"");
        assert!(matches!(
            tally(&[v("a", err), v("b", err)], 2),
            Verdict::Agreed { .. }
        ));
    }

    #[test]
    fn diagnostics_do_not_vote() {
        let a = ResultDigest::of(0, b"obj", b"/tmp/ccAbC123.s: Assembler messages:\n");
        let b = ResultDigest::of(0, b"obj", b"warning: something else entirely\n");
        assert!(matches!(
            tally(&[v("a", a), v("b", b)], 2),
            Verdict::Agreed { .. }
        ));
    }

    #[test]
    fn redundancy_one_accepts_a_single_result() {
        assert!(matches!(
            tally(&[v("a", d(0, b"o"))], 1),
            Verdict::Agreed { .. }
        ));
    }

    #[test]
    fn infrastructure_statuses_are_not_votes() {
        assert!(status_is_vote(0));
        assert!(status_is_vote(1 << 8));
        assert!(status_is_vote(4 << 8));
        assert!(!status_is_vote(110 << 8), "compiler missing on server");
        assert!(!status_is_vote(107 << 8), "client disconnected");
        assert!(!status_is_vote(0x8b), "SIGSEGV with core");
        assert!(!status_is_vote(9), "SIGKILL");
        assert!(!status_is_vote(200 << 8));
    }

    #[test]
    fn arbiter_names_liars_only_with_a_witness() {
        let good = d(0, b"obj");
        let bad = d(0, b"trojan");
        let a = arbitrate(&[v("h", good), v("liar", bad)], &good);
        assert_eq!(a.liars, ["liar"]);
        assert!(!a.local_toolchain_suspect);
        let a = arbitrate(&[v("x", bad), v("y", d(0, b"other"))], &good);
        assert!(a.liars.is_empty());
        assert!(a.local_toolchain_suspect);
    }

    #[test]
    fn normalisation_table() {
        let cases: &[(&str, &str)] = &[
            (
                "/tmp/ccXy12Ab.s: Assembler messages:\n",
                "<tmp>: Assembler messages:\n",
            ),
            (
                "{standard input}: Assembler messages:\n",
                "<tmp>: Assembler messages:\n",
            ),
            (
                "/var/tmp/distcc/cc9fKQ2z.s:3: Error: bad\n",
                "<tmp>:3: Error: bad\n",
            ),
            (
                "x.c:1:5: warning: unused variable \u{2018}y\u{2019}\n",
                "x.c:1:5: warning: unused variable 'y'\n",
            ),
            ("\u{1b}[01;35mwarning:\u{1b}[m text\n", "warning: text\n"),
            ("distccd[123] (dcc_job_summary) client: 1.2.3.4\n", ""),
            (
                "/usr/include/stdio.h:10: note\n",
                "/usr/include/stdio.h:10: note\n",
            ),
            (
                "/tmp/cc.s: not a gcc temp name\n",
                "/tmp/cc.s: not a gcc temp name\n",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                String::from_utf8(normalize_diagnostics(input.as_bytes())).unwrap(),
                *want,
                "input {input:?}"
            );
        }
    }
}
