//! The server's policy for commands from strangers: which compilers may run and
//! which flag shapes are allowed. An allow-list: anything not recognised as safe
//! is refused, with the reason.
//!
//! The threat (spec hostile-input §2.2): compiler flags that load code (`-fplugin=`,
//! `-B`, `-specs=`, `-wrapper`, `-Xclang -load`), write files (`-MF`, `-fdump-*`,
//! `-save-temps`, `-aux-info`) or read them (`@file`, `-fprofile-use=`,
//! `-fsanitize-ignorelist=`). distcc 3.4 refuses only `-fplugin=` and `-specs=`.
//! Here every argument must match a known-harmless shape, every flag that takes a
//! separate value is modelled, and no word gcc could read as a file survives
//! except the job's own input and output, which are replaced by fixed names.

use super::scan::{scan_locating_output, OutputAt, ScanOutcome};

/// Why the server refuses a command. `Display` goes into `SERR` and the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("compiler {0:?} is not on this server's whitelist")]
    CompilerNotAllowed(String),
    #[error("compiler {0:?} must be a bare name, not a path")]
    CompilerPath(String),
    #[error("argument {0:?} is not allowed on this server (it can read, write or run things outside the job)")]
    DangerousFlag(String),
    #[error("argument {0:?} is not a flag this server knows to be safe")]
    UnknownFlag(String),
    #[error("argument is not valid UTF-8")]
    NotUtf8,
    #[error("command is not distributable: {0}")]
    NotDistributable(String),
}

/// A checked command, ready to run in a job directory: the input and output
/// paths replaced by the fixed job-relative names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCommand {
    /// The compiler as the client named it (already whitelisted).
    pub compiler: String,
    /// Arguments after the compiler, with the input replaced by `input_name`
    /// and the output by `output_name`.
    pub args: Vec<String>,
    /// Preprocessed extension of the input (`.i`, `.ii`, …), for the input file name.
    pub input_ext: &'static str,
}

/// Check a command received from the network.
/// `compiler_allowed(name)` decides the whitelist for a bare compiler name
/// (after dropping a leading `/usr/bin/` or `/bin/`); `input_name` and
/// `output_name` are the fixed job-relative file names to substitute.
pub fn check_server_command(
    argv: &[Vec<u8>],
    compiler_allowed: &dyn Fn(&str) -> bool,
    input_stem: &str,
    output_name: &str,
) -> Result<ServerCommand, Refusal> {
    let argv: Vec<String> = argv
        .iter()
        .map(|a| String::from_utf8(a.clone()).map_err(|_| Refusal::NotUtf8))
        .collect::<Result<_, _>>()?;
    let Some(compiler) = argv.first() else {
        return Err(Refusal::NotDistributable("empty command line".into()));
    };
    let name = compiler_name(compiler)?;
    if !compiler_allowed(name) {
        return Err(Refusal::CompilerNotAllowed(name.to_string()));
    }
    // Control characters (NUL above all) have no place in a flag; refusing
    // them first also keeps them out of every later message.
    if let Some(bad) = argv[1..].iter().find(|a| a.chars().any(char::is_control)) {
        return Err(Refusal::DangerousFlag(bad.clone()));
    }
    // The scan expands `-Wp,` into separate words; refuse it as sent, so the
    // refusal names what the client wrote.
    if let Some(wp) = argv[1..].iter().find(|a| a.starts_with("-Wp,")) {
        return Err(Refusal::DangerousFlag(wp.clone()));
    }

    let (job, output_at) = match scan_locating_output(&argv) {
        Err(e) => return Err(Refusal::NotDistributable(e.to_string())),
        Ok((ScanOutcome::Local(reason), _)) => {
            return Err(Refusal::NotDistributable(reason.to_string()))
        }
        Ok((ScanOutcome::Distribute(job), Some(at))) => (job, at),
        // A distributable job always has an output; be safe if it had none.
        Ok((ScanOutcome::Distribute(_), None)) => {
            return Err(Refusal::NotDistributable("no output file".into()))
        }
    };
    let words = &job.argv;
    let input_name = format!("{input_stem}{}", job.preprocessed_ext);
    // Indexes gcc must not read as a flag's value.
    let (output_first, output_last) = match output_at {
        OutputAt::Separate(at) => (at, at + 1),
        OutputAt::Joined(at) | OutputAt::Bare(at) => (at, at),
    };
    let is_reserved = |i: usize| i == job.input_index || (output_first..=output_last).contains(&i);

    let mut args = Vec::with_capacity(words.len());
    let mut i = 1;
    while i < words.len() {
        if i == job.input_index {
            args.push(input_name.clone());
            i += 1;
            continue;
        }
        if i == output_first {
            args.push("-o".to_string());
            args.push(output_name.to_string());
            i = output_last + 1;
            continue;
        }
        let word = words[i].as_str();
        match classify(word) {
            Shape::Alone => {
                args.push(word.to_string());
                i += 1;
            }
            Shape::WithValue(check) => {
                let value = match words.get(i + 1) {
                    Some(v) if !is_reserved(i + 1) => v.as_str(),
                    // The value would be the input or output (or is missing):
                    // gcc and the scan would disagree about what is what.
                    _ => return Err(Refusal::UnknownFlag(word.to_string())),
                };
                if !check(value) {
                    return Err(Refusal::UnknownFlag(format!("{word} {value}")));
                }
                args.push(word.to_string());
                args.push(value.to_string());
                i += 2;
            }
            Shape::Dangerous => return Err(Refusal::DangerousFlag(word.to_string())),
            Shape::MachineSpecific => {
                return Err(Refusal::NotDistributable(format!(
                    "{word}: the result depends on the CPU of the machine that compiles it"
                )))
            }
            Shape::Unknown => return Err(Refusal::UnknownFlag(word.to_string())),
        }
    }
    Ok(ServerCommand {
        compiler: compiler.clone(),
        args,
        input_ext: job.preprocessed_ext,
    })
}

/// distcc's whitelist rule for argv[0]: a leading `/usr/bin/` or `/bin/`
/// (compared case-insensitively) is ignored; what remains must be a bare name.
fn compiler_name(compiler: &str) -> Result<&str, Refusal> {
    let mut name = compiler;
    for prefix in ["/usr/bin/", "/bin/"] {
        if let Some(head) = compiler.get(..prefix.len()) {
            if head.eq_ignore_ascii_case(prefix) {
                name = &compiler[prefix.len()..];
                break;
            }
        }
    }
    if name.contains('/') {
        return Err(Refusal::CompilerPath(compiler.to_string()));
    }
    if name.is_empty() || name.starts_with('-') || name == "." || name == ".." {
        return Err(Refusal::CompilerNotAllowed(name.to_string()));
    }
    Ok(name)
}

/// What an argument is, as far as the allow-list is concerned.
enum Shape {
    /// A harmless flag on its own.
    Alone,
    /// A harmless flag whose value is the next word, if the value passes.
    WithValue(fn(&str) -> bool),
    /// Known to read, write or run things outside the job.
    Dangerous,
    /// The result would depend on the server's CPU.
    MachineSpecific,
    /// Not a shape this server knows to be safe.
    Unknown,
}

/// Prefixes of arguments known to reach outside the job (hostile-input §2.2).
/// Checked before any allowed shape, so `-fplugin=x` never matches the `-f` pattern.
const DANGEROUS_PREFIXES: &[&str] = &[
    // Read arbitrary files.
    "@",
    "-I",
    "-i", // -include -imacros -isystem -iquote -idirafter -isysroot -iplugindir -iprefix …
    "-L",
    "-l",
    "-T",
    "--sysroot",
    "--gcc-toolchain",
    "-gcc-toolchain",
    "--config",
    // Choose or wrap the programs the driver runs, or load code.
    "-B",
    "--prefix",
    "-specs",
    "--specs",
    "-wrapper",
    "-X", // -Xclang -Xassembler -Xlinker -Xpreprocessor -Xarch_*
    "-cc1",
    "-load",
    "-fplugin",
    "-fpass-plugin",
    "-fuse-ld",
    "--ld-path",
    "-mllvm",
    "-Wa,", // except exactly `-Wa,--noexecstack`, allowed before this list
    "-Wl,",
    "-Wp,",
    "-foffload",
    "-fmodule", // -fmodules -fmodule-file= -fmodule-map-file= -fmodule-mapper= -fmodules-cache-path=
    "-fimplicit-module",
    "-fprebuilt-module",
    "-fcxx-modules",
    // Write files beside (or instead of) the output.
    "-M",
    "-save-temps",
    "--save-temps",
    "-aux-info",
    "-dumpbase",
    "-dumpdir",
    "-gsplit-dwarf",
    "-gmodules",
    "-time=",
    "--coverage",
    "-coverage",
    "--output",
    "-ftest-coverage",
    "-fdump",
    "-fopt-info",
    "-fcallgraph-info",
    "-fstack-usage",
    "-fcompare-debug",
    "-fcrash-diagnostics",
    "-ftime-trace",
    "-fsave-optimization-record",
    "-foptimization-record",
    "-fproc-stat-report",
    "-fdeps-",
    "-fself-test",
    "-fthinlto",
    "-fdiagnostics-add-output",
    "-fdiagnostics-set-output",
    // Read (and for -fprofile-generate write) profile data.
    "-fprofile",
    "-fauto-profile",
    "-fcs-profile",
    "-fbranch-probabilities",
    "-fxray",
    "-fsanitize-blacklist",
    "-fsanitize-ignorelist",
    "-fsanitize-system-blacklist",
    "-fsanitize-system-ignorelist",
    "-fsanitize-coverage-allowlist",
    "-fsanitize-coverage-ignorelist",
    "-fsanitize-coverage-blocklist",
    "-fsanitize-coverage-whitelist",
    "-fsanitize-coverage-blacklist",
    // Driver queries and link-time printing.
    "-print",
    "--print",
    "-dump",
];

/// Flags accepted on their own, exactly.
const ALONE: &[&str] = &[
    "-c",
    "-S",
    "-w",
    "-W",
    "-v",
    "-pipe",
    "-ansi",
    "-pedantic",
    "-pedantic-errors",
    "-pthread",
    "-pg",
    "-trigraphs",
    "-undef",
    "-nostdinc",
    "-nostdinc++",
    // Marks the object's stack non-executable; OpenSSL, ffmpeg, libgcrypt use it.
    "-Wa,--noexecstack",
    // Link-time only, inert with -c/-S.
    "-static",
    "-shared",
    "-pie",
    "-no-pie",
    "-rdynamic",
    "-nostdlib",
    "-nostartfiles",
    "-nodefaultlibs",
];

/// `-x` languages that compile a (preprocessed) C-family translation unit.
const LANGUAGES: &[&str] = &[
    "c",
    "c++",
    "objective-c",
    "objective-c++",
    "cpp-output",
    "c++-cpp-output",
    "objective-c-cpp-output",
    "objective-c++-cpp-output",
];

/// `-f` options whose value is a path or a path mapping, used only as a string
/// (in debug info or `__FILE__`): any printable value is fine.
const F_PATH_STRING_OPTIONS: &[&str] = &[
    "-fdebug-prefix-map=",
    "-ffile-prefix-map=",
    "-fmacro-prefix-map=",
    "-fdebug-compilation-dir=",
    "-ffile-compilation-dir=",
];

fn classify(word: &str) -> Shape {
    if ALONE.contains(&word) {
        return Shape::Alone;
    }
    if DANGEROUS_PREFIXES.iter().any(|p| word.starts_with(p)) {
        return Shape::Dangerous;
    }
    if !word.starts_with('-') {
        // A second file, a stray header, …: gcc would read it.
        return Shape::Unknown;
    }
    if let Some(rest) = word.strip_prefix("-O") {
        return ok(matches!(rest, "" | "s" | "g" | "z" | "fast")
            || (!rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit())));
    }
    if let Some(rest) = word.strip_prefix("-g") {
        return ok(debug_option(rest));
    }
    if let Some(rest) = word.strip_prefix("-W") {
        return ok(option_with_value(rest, is_name_char, is_value_char));
    }
    if let Some(rest) = word.strip_prefix("-f") {
        return f_option(word, rest);
    }
    if let Some(rest) = word.strip_prefix("-m") {
        if let Some((_, value)) = rest.split_once('=') {
            if value == "native" {
                return Shape::MachineSpecific;
            }
        }
        return ok(option_with_value(rest, is_name_char, is_value_char));
    }
    if let Some(std) = word
        .strip_prefix("-std=")
        .or_else(|| word.strip_prefix("--std="))
    {
        return ok(!std.is_empty() && std.chars().all(is_name_char));
    }
    if word == "-x" {
        return Shape::WithValue(|lang| LANGUAGES.contains(&lang));
    }
    if let Some(lang) = word.strip_prefix("-x") {
        return ok(LANGUAGES.contains(&lang));
    }
    if word == "-D" {
        return Shape::WithValue(|def| !def.is_empty() && macro_definition(def));
    }
    if let Some(def) = word.strip_prefix("-D") {
        return ok(macro_definition(def));
    }
    if word == "-U" {
        return Shape::WithValue(macro_name);
    }
    if let Some(name) = word.strip_prefix("-U") {
        return ok(macro_name(name));
    }
    if word == "-target" {
        return Shape::WithValue(target_triple);
    }
    if let Some(triple) = word.strip_prefix("--target=") {
        return ok(target_triple(triple));
    }
    if word == "--param" {
        return Shape::WithValue(param_setting);
    }
    if let Some(setting) = word.strip_prefix("--param=") {
        return ok(param_setting(setting));
    }
    Shape::Unknown
}

fn ok(allowed: bool) -> Shape {
    if allowed {
        Shape::Alone
    } else {
        Shape::Unknown
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+' | '.')
}

fn is_value_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+' | '.' | ',')
}

/// `NAME[=VALUE]`: a name starting with a letter or digit, an optional value
/// from a small character set (no `/`, no `=`, no `@`).
fn option_with_value(
    rest: &str,
    name_char: fn(char) -> bool,
    value_char: fn(char) -> bool,
) -> bool {
    let (name, value) = match rest.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (rest, None),
    };
    let name_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(name_char);
    let value_ok = value.is_none_or(|v| !v.is_empty() && v.chars().all(value_char));
    name_ok && value_ok
}

/// What follows `-g`: `-g`, `-g0`–`-g3`, `-ggdb`, `-gdwarf-5`, `-gz=zlib`,
/// `-gno-column-info`, … (`-gsplit-dwarf` and `-gmodules` are refused earlier).
fn debug_option(rest: &str) -> bool {
    rest.is_empty()
        || option_with_value(
            rest,
            |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-',
            |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-',
        )
}

fn f_option(word: &str, rest: &str) -> Shape {
    if let Some(prefix) = F_PATH_STRING_OPTIONS.iter().find(|p| word.starts_with(*p)) {
        return ok(word.len() > prefix.len());
    }
    if let Some(format) = word.strip_prefix("-fdiagnostics-format=") {
        return match format {
            "text" | "json" => Shape::Alone,
            _ => Shape::Dangerous,
        };
    }
    ok(option_with_value(rest, is_name_char, is_value_char))
}

/// `NAME`, `NAME=VALUE` or `NAME(ARGS)=VALUE`: only the name is constrained;
/// the value is text pasted into the program and cannot name a file.
fn macro_definition(def: &str) -> bool {
    let name_end = def.find(['=', '(']).unwrap_or(def.len());
    macro_name(&def[..name_end])
}

fn macro_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn target_triple(triple: &str) -> bool {
    !triple.is_empty()
        && triple
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `--param NAME=NUMBER`.
fn param_setting(setting: &str) -> bool {
    match setting.split_once('=') {
        Some((name, value)) => {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
                && !value.is_empty()
                && value.chars().all(|c| c.is_ascii_digit())
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WHITELIST: &[&str] = &[
        "cc",
        "c++",
        "gcc",
        "g++",
        "gcc-12",
        "clang",
        "clang++",
        "clang-14",
        "x86_64-linux-gnu-gcc",
        "x86_64-linux-gnu-g++",
        "x86_64-linux-gnu-gcc-12",
    ];

    fn allowed(name: &str) -> bool {
        WHITELIST.contains(&name)
    }

    fn check(cmd: &str) -> Result<ServerCommand, Refusal> {
        let argv: Vec<Vec<u8>> = cmd.split(' ').map(|w| w.as_bytes().to_vec()).collect();
        check_server_command(&argv, &allowed, "dportage-job", "dportage-job.o")
    }

    fn accepted(cmd: &str) -> Vec<String> {
        match check(cmd) {
            Ok(c) => c.args,
            Err(e) => panic!("{cmd}: refused: {e}"),
        }
    }

    #[test]
    fn input_and_output_are_replaced() {
        let c = check("x86_64-linux-gnu-gcc -c /tmp/distcc_1.i -o /etc/passwd").unwrap();
        assert_eq!(c.compiler, "x86_64-linux-gnu-gcc");
        assert_eq!(c.args, ["-c", "dportage-job.i", "-o", "dportage-job.o"]);
        assert_eq!(c.input_ext, ".i");

        let rows = [
            ("gcc -c x.cc", "-c dportage-job.ii -o dportage-job.o"),
            (
                "gcc -c x.c -o../../x.o",
                "-c dportage-job.i -o dportage-job.o",
            ),
            ("gcc -c x.c /abs/x.o", "-c dportage-job.i -o dportage-job.o"),
            (
                "gcc -o x.o -O2 -c x.mm",
                "-o dportage-job.o -O2 -c dportage-job.mii",
            ),
            ("gcc -S x.c", "-S dportage-job.i -o dportage-job.o"),
            ("gcc -c x.ii -o x.o", "-c dportage-job.ii -o dportage-job.o"),
        ];
        for (cmd, want) in rows {
            assert_eq!(accepted(cmd).join(" "), want, "{cmd}");
        }
        assert_eq!(check("gcc -c x.m").unwrap().input_ext, ".mi");
    }

    #[test]
    fn compiler_whitelist() {
        assert_eq!(
            check("/usr/bin/gcc -c x.c").unwrap().compiler,
            "/usr/bin/gcc"
        );
        assert!(check("/bin/gcc -c x.c").is_ok());
        assert!(check("/USR/BIN/gcc -c x.c").is_ok());
        assert!(check("/Bin/clang -c x.c").is_ok());
        assert_eq!(
            check("/usr/local/bin/gcc -c x.c"),
            Err(Refusal::CompilerPath("/usr/local/bin/gcc".into()))
        );
        assert_eq!(
            check("../gcc -c x.c"),
            Err(Refusal::CompilerPath("../gcc".into()))
        );
        assert_eq!(
            check("/usr/bin/../../tmp/gcc -c x.c"),
            Err(Refusal::CompilerPath("/usr/bin/../../tmp/gcc".into()))
        );
        assert_eq!(
            check("sh -c x.c"),
            Err(Refusal::CompilerNotAllowed("sh".into()))
        );
        assert_eq!(
            check("/usr/bin/sh -c x.c"),
            Err(Refusal::CompilerNotAllowed("sh".into()))
        );
        assert!(matches!(
            check("/usr/bin/ -c x.c"),
            Err(Refusal::CompilerNotAllowed(_))
        ));
        assert!(matches!(
            check("-c x.c"),
            Err(Refusal::CompilerNotAllowed(_))
        ));
        assert!(matches!(
            check_server_command(&[], &allowed, "j", "j.o"),
            Err(Refusal::NotDistributable(_))
        ));
    }

    #[test]
    fn not_utf8_or_control_characters() {
        let argv = vec![b"gcc".to_vec(), b"-c".to_vec(), b"x\xff.c".to_vec()];
        assert_eq!(
            check_server_command(&argv, &allowed, "j", "j.o"),
            Err(Refusal::NotUtf8)
        );
        let argv = vec![b"g\xffcc".to_vec(), b"-c".to_vec(), b"x.c".to_vec()];
        assert_eq!(
            check_server_command(&argv, &allowed, "j", "j.o"),
            Err(Refusal::NotUtf8)
        );
        for bad in ["-DX=a\0b", "-O2\n", "-Wall\r", "-D\x1b[31m"] {
            let argv = vec![
                b"gcc".to_vec(),
                b"-c".to_vec(),
                b"x.c".to_vec(),
                bad.as_bytes().to_vec(),
            ];
            assert!(
                matches!(
                    check_server_command(&argv, &allowed, "j", "j.o"),
                    Err(Refusal::DangerousFlag(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn scanner_refusals() {
        for cmd in [
            "gcc x.c",
            "gcc -E x.c",
            "gcc -c x.c y.c",
            "gcc -c conftest.c",
            "gcc -march=native -c x.c",
            "gcc -c x.s",
            "gcc -specs=evil -c x.c",
            "gcc -c x.c -o -",
            "gcc -flto -c x.c",
            "gcc -M -c x.c",
        ] {
            assert!(
                matches!(check(cmd), Err(Refusal::NotDistributable(_))),
                "{cmd}: {:?}",
                check(cmd)
            );
        }
        for cmd in [
            "gcc -mcpu=native -c x.c",
            "gcc -mtune=native -c x.c",
            "gcc -march=native -c x.c",
        ] {
            let e = check(cmd).unwrap_err();
            assert!(matches!(e, Refusal::NotDistributable(_)), "{cmd}");
            assert!(e.to_string().contains("native"), "{e}");
        }
    }

    /// Every flag of hostile-input §2.2, and relatives: refused (dangerous).
    #[test]
    fn dangerous_flags_are_refused() {
        let dangerous = [
            "-fplugin=/tmp/evil.so",
            "-fplugin-arg-evil-x=y",
            "-iplugindir=/tmp",
            "-wrapper /bin/echo,PWNED",
            "-B/tmp/evil",
            "-B /tmp/evil",
            "--prefix=/tmp/evil",
            "--sysroot=/tmp/root",
            "--sysroot /tmp/root",
            "-isysroot /tmp/root",
            "-Xclang -load",
            "-Xassembler -a",
            "-Xlinker -T",
            "-Xpreprocessor -MD",
            "-fpass-plugin=/tmp/x.so",
            "--config=/tmp/x.cfg",
            "--config /tmp/x.cfg",
            "-fuse-ld=/tmp/ld",
            "--ld-path=/tmp/ld",
            "-MD",
            "-MMD",
            "-MF /tmp/x.d",
            "-MFx.d",
            "-MT x",
            "-MQ x",
            "-MP",
            "-MG",
            "-MJ /tmp/x.json",
            "-aux-info /tmp/x",
            "-aux-info=/tmp/x",
            "-fdump-tree-all",
            "-fdump-tree-original=/tmp/x",
            "-fdump-rtl-expand",
            "-fopt-info-all=/tmp/x",
            "-fopt-info",
            "-fstack-usage",
            "-fcallgraph-info",
            "-fcallgraph-info=su",
            "-dumpbase /tmp/x",
            "-dumpdir /tmp/",
            "-dumpbase-ext .c",
            "-save-temps",
            "-save-temps=obj",
            "--save-temps",
            "-Wa,-adhln=/tmp/x.lst",
            "-Wa,--MD,/tmp/x.d",
            "-Wa,@/etc/passwd",
            "-Wa,--noexecstack,-adhln=/tmp/x",
            "-Wl,-z,now",
            "-Wp,-DX",
            "-Wp,-MD,/etc/cron.d/x",
            "--coverage",
            "-ftest-coverage",
            "-gsplit-dwarf",
            "-gsplit-dwarf=single",
            "-gmodules",
            "-ftime-trace",
            "-ftime-trace=/tmp/x",
            "-fcrash-diagnostics-dir=/tmp",
            "-fcrash-diagnostics=all",
            "-fmodules",
            "-fmodules-cache-path=/tmp",
            "-fmodule-file=/tmp/x.pcm",
            "-fmodule-map-file=/tmp/m",
            "-fmodule-mapper=|/bin/sh",
            "-fmodules-ts",
            "-fimplicit-modules",
            "-fdiagnostics-format=sarif-file",
            "-fdiagnostics-format=json-file",
            "-fdiagnostics-add-output=sarif",
            "-fsave-optimization-record",
            "-foptimization-record-file=/tmp/x",
            "-fproc-stat-report=x",
            "-fdeps-file=x.json",
            "-fcompare-debug",
            "@/etc/passwd",
            "@args.rsp",
            "-fprofile-use=/tmp/x",
            "-fprofile-instr-use=/tmp/x",
            "-fprofile-instr-generate",
            "-fprofile-sample-use=/tmp/x",
            "-fprofile-list=/tmp/x",
            "-fprofile-update=atomic",
            "-fauto-profile=/tmp/x",
            "-fcs-profile-generate",
            "-fbranch-probabilities",
            "-fsanitize-blacklist=/tmp/x",
            "-fsanitize-ignorelist=/tmp/x",
            "-fsanitize-system-ignorelist=/tmp/x",
            "-fsanitize-coverage-allowlist=/tmp/x",
            "-fxray-always-instrument=/tmp/x",
            "-include /etc/passwd",
            "-include/etc/passwd",
            "-imacros /etc/passwd",
            "-I/usr/include",
            "-I /usr/include",
            "-isystem /usr/include",
            "-iquote .",
            "-idirafter /x",
            "-include-pch x.pch",
            "-L/usr/lib",
            "-lm",
            "-T /tmp/script.ld",
            "-specs=/tmp/x",
            "--specs=/tmp/x",
            "-print-file-name=libc.so",
            "-print-prog-name=cc1",
            "--print-search-dirs",
            "-dumpspecs",
            "-dumpmachine",
            "-cc1",
            "-load /tmp/x.so",
            "-mllvm -stats",
            "-foffload=nvptx-none",
            "-time=/tmp/x",
            "-fuse-ld=lld",
            "-coverage",
            "--output=/etc/x",
            "-fself-test=/usr/share",
            "-fthinlto-index=/tmp/x",
        ];
        for flags in dangerous {
            let cmd = format!("gcc {flags} -c x.c -o x.o");
            let first = flags.split(' ').next().unwrap();
            match check(&cmd) {
                Err(Refusal::DangerousFlag(arg)) => assert_eq!(arg, first, "{cmd}"),
                // Flags the scanner already keeps local never reach the allow-list.
                Err(Refusal::NotDistributable(_)) => {}
                other => panic!("{cmd}: expected a refusal, got {other:?}"),
            }
        }
    }

    /// Flags real builds use (Lua, OpenSSL, Debian's defaults, clang's Debian rewrite).
    #[test]
    fn flags_of_real_builds_are_accepted() {
        let commands = [
            "gcc -std=gnu99 -O2 -Wall -Wextra -DLUA_COMPAT_5_3 -DLUA_USE_LINUX -c lapi.c -o lapi.o",
            "x86_64-linux-gnu-gcc -fPIC -pthread -m64 -Wa,--noexecstack -c x.c",
            "x86_64-linux-gnu-gcc -fPIC -pthread -m64 -Wall -O3 -DOPENSSL_USE_NODELETE -DL_ENDIAN -DOPENSSL_PIC -DOPENSSL_BUILDING_OPENSSL -DNDEBUG -c crypto/aes/aes_core.c -o crypto/aes/libcrypto-lib-aes_core.o",
            "gcc -g -O2 -ffile-prefix-map=/build/x=. -fstack-protector-strong -Wformat -Werror=format-security -D_FORTIFY_SOURCE=2 -fcf-protection -c x.c",
            "gcc -fno-strict-aliasing -ffunction-sections -fdata-sections -fvisibility=hidden -fvisibility-inlines-hidden -c x.cpp",
            "g++ -std=c++17 -O3 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all -c x.cc -o x.o",
            "clang -c x.c -o x.o -target x86_64-pc-linux-gnu",
            "clang++ -O2 --target=x86_64-pc-linux-gnu -c x.cpp -o x.o",
            "clang -g -fdebug-compilation-dir=/home/u/src -c x.c",
            "gcc -flto=auto -frandom-seed=0123abcd -c x.c",
            "gcc -x c -c x.i -o x.o",
            "gcc -x cpp-output -c x.i -o x.o",
            "g++ -x c++ -c x.c",
            // Joined -x only distributes when the *next* word starts with c.
            "gcc -xc++ c.cc -c",
            "gcc -Os -g3 -ggdb -gdwarf-4 -gz -gz=zlib -gno-column-info -pipe -w -c x.c",
            "gcc -O -O0 -O1 -O3 -Og -Oz -Ofast -c x.c",
            "gcc -pedantic -pedantic-errors -ansi -std=c99 -W -Wno-unused-parameter -Wformat=2 -Wframe-larger-than=2048 -Werror -Werror=implicit-function-declaration -c x.c",
            "gcc -march=x86-64-v2 -mtune=generic -msse4.2 -mno-red-zone -mcmodel=kernel -mfpmath=sse -c x.c",
            "gcc -fdiagnostics-color=always -fdiagnostics-format=json -fmessage-length=0 -c x.c",
            "gcc -fdebug-prefix-map=/a=/b -fmacro-prefix-map=/a=. -c x.c",
            "gcc -D NAME -D X=1 -U Y -UZ -DSTR=\"a/b\" -DF(x)=x -c x.c",
            "gcc --param ssp-buffer-size=4 --param=max-inline-insns-single=100 -c x.c",
            "gcc -v -c x.c",
            "gcc -fopenmp -fexceptions -fno-rtti -fstack-clash-protection -fzero-call-used-regs=used-gpr -c x.cpp",
            "gcc -fpatchable-function-entry=16,8 -fno-builtin-memcpy -ftemplate-depth=900 -c x.cc",
            "gcc -static -nostdlib -no-pie -c x.c",
            "gcc -undef -nostdinc -c x.i",
            "x86_64-linux-gnu-gcc-12 -c x.c",
        ];
        for cmd in commands {
            let _ = accepted(cmd);
        }
    }

    #[test]
    fn unknown_shapes_are_refused() {
        let unknown = [
            "-###",
            "-",
            "-dM",
            "-dA",
            "-H",
            "-P",
            "-C",
            "-Q",
            "--version",
            "--help",
            "extra.h",
            "/etc/passwd",
            "-x c-header",
            "-x go",
            "-frandom-seed=/etc/passwd",
            "-fbasic-block-sections=list=x",
            "-finstrument-functions-exclude-file-list=/usr",
            "-fvisibility=",
            "-Wformat=",
            "-Wno-#warnings",
            "-std=",
            "-Ox",
            "-gfoo=/x",
            "-DX-Y=1",
            "-D1X",
            "-U X=1",
            "-target x86_64/evil",
            "--target=",
            "--param x=/y",
            "--param=x",
            "-arch x86_64",
            "-z now",
            "-e main",
            "-msome=/path",
            "-fvisibility=hid@den",
        ];
        for flags in unknown {
            let cmd = format!("gcc {flags} -c x.c -o x.o");
            match check(&cmd) {
                Err(Refusal::UnknownFlag(_)) | Err(Refusal::DangerousFlag(_)) => {}
                other => panic!("{cmd}: expected a refusal, got {other:?}"),
            }
        }
    }

    /// A value-taking flag must never swallow the input or output: gcc would
    /// then see a different command from the one checked.
    #[test]
    fn value_flags_cannot_swallow_input_or_output() {
        for cmd in [
            "gcc -c -D x.c",
            "gcc -c x.c -D -o x.o",
            "gcc -c x.c -o x.o -D",
            "gcc -c x.c -x",
            "gcc -c -target x.c",
            "gcc -c x.c -U x.o",
            "gcc -c x.c --param",
        ] {
            assert!(
                matches!(check(cmd), Err(Refusal::UnknownFlag(_))),
                "{cmd}: {:?}",
                check(cmd)
            );
        }
        // The dangling -o of distcc's quirk: the scan appended its own -o.
        assert!(matches!(
            check("gcc -c x.c -o"),
            Err(Refusal::UnknownFlag(_))
        ));
    }

    #[test]
    fn refusal_messages_name_the_argument() {
        let e = check("gcc -fplugin=/tmp/x.so -c x.c").unwrap_err();
        assert!(e.to_string().contains("-fplugin=/tmp/x.so"), "{e}");
        let e = check("gcc -dM -c x.c").unwrap_err();
        assert!(e.to_string().contains("-dM"), "{e}");
        let e = check("gcc -c x.c y.c").unwrap_err();
        assert!(e.to_string().contains("two source files"), "{e}");
    }
}
