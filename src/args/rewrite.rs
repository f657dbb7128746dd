//! Client-side rewriting: the local preprocessor command and the argv sent to the server.

use super::scan::CompileJob;

/// The preprocessor command: every `-o X`/`-oX` removed, `-c`/`-S` → `-E`.
pub fn preprocessor_argv(job: &CompileJob) -> Vec<String> {
    let mut out = Vec::with_capacity(job.argv.len());
    let mut words = job.argv.iter();
    while let Some(word) = words.next() {
        if word == "-o" {
            words.next();
        } else if word.starts_with("-o") {
        } else if word == "-c" || word == "-S" {
            out.push("-E".to_string());
        } else {
            out.push(word.clone());
        }
    }
    out
}

/// Options removed together with the word after them (separate forms only).
const STRIP_WITH_VALUE: &[&str] = &[
    "-D",
    "-I",
    "-U",
    "-L",
    "-l",
    "-MF",
    "-MT",
    "-MQ",
    "-include",
    "-imacros",
    "-iprefix",
    "-iwithprefix",
    "-isystem",
    "-iwithprefixbefore",
    "-idirafter",
];

/// Prefixes of words removed alone (`-DNDEBUG`, `-Wl,-z`, …).
const STRIP_PREFIXES: &[&str] = &[
    "-Wp,", "-Wl,", "-D", "-U", "-I", "-l", "-L", "-MF", "-MT", "-MQ", "-isystem", "-stdlib",
];

/// Words removed alone, exactly.
const STRIP_EXACT: &[&str] = &[
    "-undef",
    "-nostdinc",
    "-nostdinc++",
    "-MD",
    "-MMD",
    "-MG",
    "-MP",
];

/// The argv sent to the server: the job's argv minus options that only matter to
/// the preprocessor or linker (spec §8.6), e.g.
/// `gcc -DFOO=1 -I/usr/include -include stdio.h -c x.c -o x.o` → `gcc -c x.c -o x.o`.
///
/// Exactly distcc 3.4's list, quirks included: a trailing separate `-D` takes
/// the next word with it whatever it is, and `-iquote`, `-include` joined and
/// `-x` stay (harmless on preprocessed input).
pub fn server_argv(job: &CompileJob) -> Vec<String> {
    let mut out = Vec::with_capacity(job.argv.len());
    let mut words = job.argv.iter();
    while let Some(word) = words.next() {
        let w = word.as_str();
        if STRIP_WITH_VALUE.contains(&w) {
            words.next();
        } else if STRIP_PREFIXES.iter().any(|p| w.starts_with(p)) || STRIP_EXACT.contains(&w) {
        } else {
            out.push(word.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::scan::{scan, ScanOutcome};

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn job(s: &str) -> CompileJob {
        match scan(&words(s)).unwrap() {
            ScanOutcome::Distribute(job) => job,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn preprocessor_commands() {
        let rows = [
            ("gcc -MD -c x.c -o x.o", "gcc -MD -E x.c"),
            ("gcc -c x.c", "gcc -E x.c"),
            ("gcc -S x.c -oout.s", "gcc -E x.c"),
            ("gcc -c -S -O2 x.c", "gcc -E -E -O2 x.c"),
            ("gcc -o x.o -DX -c x.c", "gcc -DX -E x.c"),
            // distcc 3.4 too: the added `-o x.o` after a dangling `-o` loses its `-o`.
            ("gcc -c x.c -o", "gcc -E x.c x.o"),
        ];
        for (cmd, want) in rows {
            assert_eq!(preprocessor_argv(&job(cmd)), words(want), "{cmd}");
        }
    }

    #[test]
    fn server_commands() {
        let rows = [
            // The spec's example (observed on the wire).
            (
                "gcc -DFOO=1 -I/usr/include -include stdio.h -c x.c -o x.o",
                "gcc -c x.c -o x.o",
            ),
            // Every stripped form at once (observed on the wire, minus the
            // rewritten compiler name).
            (
                "gcc -D X -I inc -U Y -L lib -l m -lm -Lx -MF f -MT t -MQ q -imacros m.h \
                 -iprefix p -iwithprefix w -isystem s -iwithprefixbefore b -idirafter a \
                 -isystemX -stdlib=libc++ -undef -nostdinc -nostdinc++ -MD -MMD -MG -MP \
                 -Wl,-z -iquote q -includefoo -c x.c",
                "gcc -iquote q -includefoo -c x.c -o x.o",
            ),
            (
                "gcc -x c -Xpreprocessor -DA -c x.c",
                "gcc -x c -Xpreprocessor -c x.c -o x.o",
            ),
            ("gcc -Wp,-MD,x.d -O2 -c x.c", "gcc -O2 -c x.c -o x.o"),
            (
                "gcc -O2 -g -fPIC -c x.c -o x.o",
                "gcc -O2 -g -fPIC -c x.c -o x.o",
            ),
            // A trailing -D swallows the added -o (as distcc 3.4 does).
            ("gcc -c x.c -D", "gcc -c x.c x.o"),
        ];
        for (cmd, want) in rows {
            assert_eq!(server_argv(&job(cmd)), words(want), "{cmd}");
        }
    }
}
