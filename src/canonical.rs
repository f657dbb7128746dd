//! Making a job deterministic before it is sent to several hosts, so that honest
//! hosts agree byte for byte (measured facts: shared/spec/hostile-input-and-
//! determinism.md §1). Pure: the caller supplies the compiler name, the client's
//! working directory and the input's identity.

/// What to do with a job when redundancy ≥ 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Canonical {
    /// Send it, with these arguments appended to the server argv.
    Send { extra_args: Vec<String> },
    /// It cannot be made deterministic: compile locally, for this reason.
    Local(String),
}

/// Flags whose output embeds a server path or a random stamp that no client-side
/// flag removes: such jobs stay local when they must be verified.
const NONDETERMINISTIC: &[(&str, &str)] = &[
    (
        "--coverage",
        "coverage data embeds the output path and a random stamp",
    ),
    (
        "-fprofile-arcs",
        "coverage data embeds the output path and a random stamp",
    ),
    (
        "-ftest-coverage",
        "coverage data embeds the output path and a random stamp",
    ),
    (
        "-gsplit-dwarf",
        "the .dwo file name is the server's temp path and the .dwo is not returned",
    ),
    (
        "-fno-working-directory",
        "DW_AT_comp_dir would name the server's directory",
    ),
];

/// Decide how to send `argv` (the argv that goes to the server; argv[0] is the
/// compiler) for verified dispatch. `cwd` is the client's working directory and
/// `input_key` a stable name for the input (e.g. its path), used to seed LTO.
pub fn canonicalize(argv: &[String], cwd: &str, input_key: &str) -> Canonical {
    for arg in argv.iter().skip(1) {
        for (flag, why) in NONDETERMINISTIC {
            if arg == flag {
                return Canonical::Local(format!("{flag}: {why}"));
            }
        }
        if arg.starts_with("-fprofile-generate") || arg.starts_with("-fprofile-instr-generate") {
            return Canonical::Local(format!("{arg}: profile instrumentation is per-build state"));
        }
    }
    let mut extra = Vec::new();
    let has = |prefix: &str| argv.iter().skip(1).any(|a| a.starts_with(prefix));
    // GCC bug 66305: LTO section names carry a random id unless seeded.
    if has("-flto") && !has("-frandom-seed") {
        let seed = blake3::hash(input_key.as_bytes()).to_hex();
        extra.push(format!("-frandom-seed={}", &seed[..16]));
    }
    // clang ignores the cwd line marker and records the server's directory.
    let compiler = argv.first().map(String::as_str).unwrap_or("");
    let base = compiler.rsplit('/').next().unwrap_or(compiler);
    let is_clang = base.starts_with("clang");
    let wants_debug = argv
        .iter()
        .skip(1)
        .any(|a| a.starts_with("-g") && a != "-g0");
    if is_clang && wants_debug && !has("-fdebug-compilation-dir") && !has("-ffile-compilation-dir")
    {
        extra.push(format!("-fdebug-compilation-dir={cwd}"));
    }
    Canonical::Send { extra_args: extra }
}

/// Flags the client adds to its own preprocessing of a verified job, so the
/// preprocessed input names the client's directory instead of letting each
/// server's job directory leak into the object.
///
/// GCC's LTO streamer records the compile's working directory for relative
/// source names (measured with gcc 12: `-flto=auto -frandom-seed=X` compiled
/// from one `.i` in two directories gives different objects, and real distccd
/// compiles every job in a fresh temp directory). With `-fworking-directory`
/// the `.i` carries `# 1 "/client/cwd//"` and cc1 uses that instead, as `-g`
/// already does implicitly. clang rejects the flag and needs nothing here.
pub fn preprocessor_extra_args(argv: &[String]) -> Vec<String> {
    let compiler = argv.first().map(String::as_str).unwrap_or("");
    let base = compiler.rsplit('/').next().unwrap_or(compiler);
    if base.starts_with("clang") {
        return Vec::new();
    }
    let args = || argv.iter().skip(1);
    let lto = args().any(|a| a.starts_with("-flto") && a != "-flto=none");
    let told = args().any(|a| a == "-fworking-directory" || a == "-fno-working-directory");
    if lto && !told {
        vec!["-fworking-directory".to_owned()]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn plain_jobs_are_sent_unchanged() {
        assert_eq!(
            canonicalize(&argv("gcc -O2 -g -c x.c -o x.o"), "/src", "x.c"),
            Canonical::Send { extra_args: vec![] }
        );
    }

    #[test]
    fn lto_gets_a_stable_seed() {
        let a = canonicalize(&argv("gcc -flto=auto -c x.c -o x.o"), "/src", "/src/x.c");
        let b = canonicalize(&argv("gcc -flto=auto -c x.c -o x.o"), "/src", "/src/x.c");
        assert_eq!(a, b);
        match a {
            Canonical::Send { extra_args } => {
                assert_eq!(extra_args.len(), 1);
                assert!(extra_args[0].starts_with("-frandom-seed="));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            canonicalize(&argv("gcc -flto -frandom-seed=1 -c x.c"), "/src", "x.c"),
            Canonical::Send { extra_args: vec![] }
        );
    }

    #[test]
    fn gcc_lto_preprocesses_with_the_working_directory() {
        assert_eq!(
            preprocessor_extra_args(&argv("gcc -O2 -flto=auto -c x.c")),
            ["-fworking-directory"]
        );
        assert_eq!(
            preprocessor_extra_args(&argv("/usr/bin/x86_64-linux-gnu-g++ -flto -c x.cc")),
            ["-fworking-directory"]
        );
        for unchanged in [
            "gcc -O2 -c x.c",
            "gcc -g -c x.c",
            "gcc -flto=none -c x.c",
            "gcc -flto -fworking-directory -c x.c",
            "clang -flto=thin -c x.c",
        ] {
            assert!(
                preprocessor_extra_args(&argv(unchanged)).is_empty(),
                "{unchanged}"
            );
        }
    }

    #[test]
    fn clang_debug_gets_the_client_directory() {
        assert_eq!(
            canonicalize(&argv("clang -g -c x.c -o x.o"), "/home/u/src", "x.c"),
            Canonical::Send {
                extra_args: vec!["-fdebug-compilation-dir=/home/u/src".into()]
            }
        );
        assert_eq!(
            canonicalize(&argv("clang -g0 -c x.c -o x.o"), "/s", "x.c"),
            Canonical::Send { extra_args: vec![] }
        );
        assert_eq!(
            canonicalize(&argv("gcc -g -c x.c -o x.o"), "/s", "x.c"),
            Canonical::Send { extra_args: vec![] }
        );
    }

    #[test]
    fn nondeterministic_jobs_stay_local() {
        for cmd in [
            "gcc --coverage -c x.c",
            "gcc -fprofile-arcs -c x.c",
            "gcc -g -gsplit-dwarf -c x.c",
            "gcc -fprofile-generate=dir -c x.c",
            "gcc -g -fno-working-directory -c x.c",
        ] {
            assert!(
                matches!(canonicalize(&argv(cmd), "/s", "x.c"), Canonical::Local(_)),
                "{cmd}"
            );
        }
    }
}
