//! distcc 3.4's argument scanner (spec §8.3): distributable, or local and why.
//!
//! The rules are distcc's, quirks included (the `-x` test looks at the *next*
//! argument even for the joined form; the scanner does not know which options
//! take a value), because the server re-runs the same scan and both sides must
//! agree on what the input and output are.

/// `-c` (object) or `-S` (assembly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    Object,
    Assembly,
}

/// A command that may be compiled remotely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileJob {
    /// The full command (argv[0] = compiler) after `-Wp,` expansion, with
    /// `-o OUTPUT` appended when the user gave none.
    pub argv: Vec<String>,
    /// Index of the input source file in `argv`.
    pub input_index: usize,
    /// The output path as given (or as added).
    pub output: String,
    pub kind: OutputKind,
    /// The input is already preprocessed (`.i .ii .mi .mii`).
    pub preprocessed: bool,
    /// Extension for the preprocessed form of the input: `.i`, `.ii`, `.mi`, `.mii`.
    pub preprocessed_ext: &'static str,
}

impl CompileJob {
    pub fn input(&self) -> &str {
        &self.argv[self.input_index]
    }
}

/// Why a command runs locally. `Display` is the answer to "why didn't it distribute?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalReason {
    /// Neither `-c` nor `-S`: linking or a driver query.
    NoCompile,
    /// `-E`: preprocess only.
    PreprocessOnly,
    /// `-M`, `-MM`, … without compiling.
    DependencyOnly(String),
    /// A flag whose result depends on this machine (`-march=native`).
    MachineSpecific(String),
    /// A flag distcc 3.4 keeps local (`-flto`, `-specs=`, profiling, `-frepo`, `-dr`, `-Wa,-a…`).
    UnsupportedFlag(String),
    /// `-x LANG` for a language that is not distributed.
    Language(String),
    NoInput,
    TwoInputs(String, String),
    TwoOutputs(String, String),
    /// Input is not a recognised source (`.s`, `.S`, unknown).
    NotSource(String),
    /// Output is `-` (stdout).
    OutputToStdout,
    /// autoconf's `conftest.*`.
    Autoconf,
}

impl std::fmt::Display for LocalReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LocalReason::NoCompile => f.write_str(
                "neither -c nor -S was given, so this is a link or a driver query, which runs here",
            ),
            LocalReason::PreprocessOnly => {
                f.write_str("-E: preprocessing alone is not worth sending, so it runs here")
            }
            LocalReason::DependencyOnly(flag) => write!(
                f,
                "{flag}: this lists dependencies instead of compiling, which runs here"
            ),
            LocalReason::MachineSpecific(flag) => {
                write!(f, "{flag}: the result depends on this machine's CPU")
            }
            LocalReason::UnsupportedFlag(flag) => {
                write!(f, "{flag}: {}", unsupported_flag_reason(flag))
            }
            LocalReason::Language(joined) if joined.starts_with("-x") => write!(
                f,
                "{joined}: a joined -x is only distributed when the word after it starts \
                 with c, go or objective-c (distcc 3.4's rule); write `-x LANG` instead"
            ),
            LocalReason::Language(lang) => write!(
                f,
                "-x {lang}: only C, C++ and Objective-C sources are sent to other machines"
            ),
            LocalReason::NoInput => f.write_str(
                "no C, C++ or Objective-C source file (.c, .cc, .cpp, .m, …) is on the command line",
            ),
            LocalReason::TwoInputs(a, b) => write!(
                f,
                "two source files ({a} and {b}): a remote job compiles exactly one"
            ),
            LocalReason::TwoOutputs(a, b) => write!(
                f,
                "two output files ({a} and {b}): this looks like a link, which runs here"
            ),
            LocalReason::NotSource(path) => write!(
                f,
                "{path} is not a C, C++ or Objective-C source (assembly is always assembled here)"
            ),
            LocalReason::OutputToStdout => f.write_str(
                "-o -: compilers differ on whether this means stdout, so it runs here",
            ),
            LocalReason::Autoconf => {
                f.write_str("this is an autoconf test (conftest.*), which must run here")
            }
        }
    }
}

fn unsupported_flag_reason(flag: &str) -> &'static str {
    if flag == "-flto" {
        "link-time optimisation is compiled here, as distcc 3.4 does"
    } else if flag.starts_with("-specs=") {
        "a spec file can change the programs the compiler runs, so it runs here"
    } else if flag.starts_with("-Wa,") {
        "the assembler would write a listing or dependency file beside the object"
    } else if flag == "-frepo" {
        "the compiler would write .rpo files beside the object"
    } else if flag.starts_with("-dr") {
        "the compiler would write RTL dump files beside the object"
    } else if flag.contains("profile") || flag.contains("coverage") {
        "profiling data is read or written on this machine"
    } else {
        "distcc 3.4 always runs this locally"
    }
}

/// Scanner outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanOutcome {
    Distribute(CompileJob),
    Local(LocalReason),
}

/// A command line that is not a compiler command at all.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ArgsError {
    #[error("empty command line")]
    Empty,
    #[error("unrecognized distcc option: {0}")]
    CompilerIsOption(String),
}

/// distcc's `-Wp,` expansion: `-Wp,a,b` → `a b`; `-Wp,-MD,F` / `-Wp,-MMD,F` →
/// `-MD -MF F` / `-MMD -MF F`. Every other argument is kept as it is.
pub fn expand_preprocessor_options(argv: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(argv.len());
    for arg in argv {
        let Some(list) = arg.strip_prefix("-Wp,") else {
            out.push(arg.clone());
            continue;
        };
        let mut parts = list.split(',');
        while let Some(part) = parts.next() {
            out.push(part.to_string());
            if part == "-MD" || part == "-MMD" {
                // A missing file name only drops the -MF (distcc warns).
                if let Some(file) = parts.next() {
                    out.push("-MF".to_string());
                    out.push(file.to_string());
                }
            }
        }
    }
    out
}

/// Where the scan found the output in [`CompileJob::argv`], for rewriting it
/// without re-deriving (and possibly misreading) the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutputAt {
    /// `-o` at this index, the value right after it (also when added by the scan).
    Separate(usize),
    /// `-oVALUE` at this index.
    Joined(usize),
    /// A bare `NAME.o` word at this index.
    Bare(usize),
}

/// Scan `argv` (argv[0] = compiler) with distcc 3.4's rules.
pub fn scan(argv: &[String]) -> Result<ScanOutcome, ArgsError> {
    scan_locating_output(argv).map(|(outcome, _)| outcome)
}

/// [`scan`], also telling where the output is when the command distributes.
pub(crate) fn scan_locating_output(
    argv: &[String],
) -> Result<(ScanOutcome, Option<OutputAt>), ArgsError> {
    if argv.is_empty() {
        return Err(ArgsError::Empty);
    }
    let mut argv = expand_preprocessor_options(argv);
    let Some(compiler) = argv.first() else {
        return Err(ArgsError::Empty);
    };
    if compiler.starts_with('-') {
        return Err(ArgsError::CompilerIsOption(compiler.clone()));
    }

    let local = |reason| Ok((ScanOutcome::Local(reason), None));
    let mut seen_c = false;
    let mut seen_s = false;
    let mut input: Option<usize> = None;
    let mut output: Option<String> = None;
    let mut output_at: Option<OutputAt> = None;
    // A non-option with an extension that is not ours, for a better message
    // when no input is found (`gcc -c x.s`).
    let mut foreign_file: Option<usize> = None;

    let mut i = 0;
    while i < argv.len() {
        let a = argv[i].as_str();
        // `Some(value)` when this argument names the output.
        let mut got_output: Option<Option<&str>> = None;
        let mut found_at = None;
        if a.starts_with('-') {
            if a == "-E" {
                return local(LocalReason::PreprocessOnly);
            } else if matches!(a, "-MD" | "-MMD" | "-MG" | "-MP") {
            } else if matches!(a, "-MF" | "-MT" | "-MQ") {
                i += 1;
            } else if a.starts_with("-MF") || a.starts_with("-MT") || a.starts_with("-MQ") {
            } else if a.as_bytes().get(1) == Some(&b'M') {
                return local(LocalReason::DependencyOnly(a.to_string()));
            } else if a == "-march=native" || a == "-mtune=native" {
                return local(LocalReason::MachineSpecific(a.to_string()));
            } else if a == "-flto" {
                return local(LocalReason::UnsupportedFlag(a.to_string()));
            } else if a.starts_with("-Wa,") {
                if a.contains(",-a") || a.contains("--MD") {
                    return local(LocalReason::UnsupportedFlag(a.to_string()));
                }
            } else if a.starts_with("-specs=") {
                return local(LocalReason::UnsupportedFlag(a.to_string()));
            } else if a == "-S" {
                seen_s = true;
            } else if matches!(
                a,
                "-fprofile-arcs"
                    | "-ftest-coverage"
                    | "--coverage"
                    | "-fprofile-correction"
                    | "-frepo"
            ) || a.starts_with("-fprofile-generate")
                || a.starts_with("-fprofile-use")
                || a.starts_with("-fauto-profile")
            {
                return local(LocalReason::UnsupportedFlag(a.to_string()));
            } else if a.starts_with("-x")
                && argv
                    .get(i + 1)
                    .is_some_and(|next| !distributable_language(next))
            {
                // Separate form: the language; joined form: the flag itself,
                // since distcc judged it by the word after it.
                let lang = if a == "-x" {
                    argv[i + 1].clone()
                } else {
                    a.to_string()
                };
                return local(LocalReason::Language(lang));
            } else if a.starts_with("-dr") {
                return local(LocalReason::UnsupportedFlag(a.to_string()));
            } else if a == "-c" {
                seen_c = true;
            } else if a == "-o" {
                found_at = Some(OutputAt::Separate(i));
                i += 1;
                got_output = Some(argv.get(i).map(String::as_str));
            } else if let Some(value) = a.strip_prefix("-o") {
                found_at = Some(OutputAt::Joined(i));
                got_output = Some(Some(value));
            }
        } else if is_source(a) {
            if let Some(first) = input {
                return local(LocalReason::TwoInputs(argv[first].clone(), a.to_string()));
            }
            input = Some(i);
        } else if a.ends_with(".o") {
            found_at = Some(OutputAt::Bare(i));
            got_output = Some(Some(a));
        } else if i > 0 && foreign_file.is_none() && find_extension(a).is_some() {
            foreign_file = Some(i);
        }

        if let Some(value) = got_output {
            if let Some(first) = &output {
                return local(LocalReason::TwoOutputs(
                    first.clone(),
                    value.unwrap_or("").to_string(),
                ));
            }
            // `-o` as the last argument names nothing; distcc then behaves as
            // if no output had been given.
            output = value.map(String::from);
            output_at = value.and(found_at);
        }
        i += 1;
    }

    if !seen_c && !seen_s {
        return local(LocalReason::NoCompile);
    }
    let Some(input_index) = input else {
        return local(match foreign_file {
            Some(at) => LocalReason::NotSource(argv[at].clone()),
            None => LocalReason::NoInput,
        });
    };
    let input_path = argv[input_index].clone();
    let base = basename(&input_path);
    if base.starts_with("conftest.") || base.starts_with("tmp.conftest.") {
        return local(LocalReason::Autoconf);
    }
    let kind = if seen_s {
        OutputKind::Assembly
    } else {
        OutputKind::Object
    };
    let output = match output {
        Some(output) => output,
        None => {
            // The compiler writes to the current directory, named after the source.
            if base.len() < 3 {
                return local(LocalReason::NotSource(input_path));
            }
            let Some(stem) = find_extension(base).map(|dot| &base[..dot]) else {
                return local(LocalReason::NotSource(input_path));
            };
            let name = match kind {
                OutputKind::Assembly => format!("{stem}.s"),
                OutputKind::Object => format!("{stem}.o"),
            };
            output_at = Some(OutputAt::Separate(argv.len()));
            argv.push("-o".to_string());
            argv.push(name.clone());
            name
        }
    };
    if output == "-" {
        return local(LocalReason::OutputToStdout);
    }
    let Some(preprocessed_ext) = preprocessed_ext(&input_path) else {
        return local(LocalReason::NotSource(input_path));
    };
    let job = CompileJob {
        argv,
        input_index,
        output,
        kind,
        preprocessed: is_preprocessed(&input_path),
        preprocessed_ext,
    };
    Ok((ScanOutcome::Distribute(job), output_at))
}

/// distcc's `-x` test on the word after any option starting with `-x`.
fn distributable_language(next: &str) -> bool {
    // "c" also covers c++, c-header, cuda, cpp-output…; kept as distcc has it.
    next.starts_with('c') || next.starts_with("objective-c") || next.starts_with("go")
}

/// Everything after the last `/` (the whole path if there is none, or if it
/// ends with `/`), as distcc's `dcc_find_basename`.
fn basename(path: &str) -> &str {
    match path.rfind('/') {
        Some(slash) if slash + 1 < path.len() => &path[slash + 1..],
        _ => path,
    }
}

/// Byte offset of the extension's dot: the last `.` in the path, if at least
/// one character follows it (distcc's `dcc_find_extension`).
fn find_extension(path: &str) -> Option<usize> {
    let dot = path.rfind('.')?;
    (dot + 1 < path.len()).then_some(dot)
}

fn extension(path: &str) -> Option<&str> {
    find_extension(path).map(|dot| &path[dot + 1..])
}

/// Is `path` a source file distcc distributes (by extension, case-sensitive)?
pub fn is_source(path: &str) -> bool {
    matches!(
        extension(path),
        Some(
            "c" | "cc"
                | "cpp"
                | "cxx"
                | "cp"
                | "c++"
                | "C"
                | "i"
                | "ii"
                | "m"
                | "mm"
                | "mi"
                | "mii"
                | "M"
        )
    )
}

/// Is `path` already preprocessed (`.i .ii .mi .mii`)?
pub fn is_preprocessed(path: &str) -> bool {
    matches!(extension(path), Some("i" | "ii" | "mi" | "mii"))
}

/// The extension of `path` once preprocessed (spec §8.6 step 2): `.c`→`.i`;
/// `.cc .cpp .cxx .cp .c++ .C .ii`→`.ii`; `.m .mi`→`.mi`; `.mm .M .mii`→`.mii`;
/// `.s`/`.S`→`.s`; anything else `None`.
pub fn preprocessed_ext(path: &str) -> Option<&'static str> {
    match extension(path)? {
        "c" | "i" => Some(".i"),
        "cc" | "cpp" | "cxx" | "cp" | "c++" | "C" | "ii" => Some(".ii"),
        "m" | "mi" => Some(".mi"),
        "mm" | "M" | "mii" => Some(".mii"),
        ext if ext.eq_ignore_ascii_case("s") => Some(".s"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn scan_str(s: &str) -> ScanOutcome {
        scan(&words(s)).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn job(s: &str) -> CompileJob {
        match scan_str(s) {
            ScanOutcome::Distribute(job) => job,
            other => panic!("{s}: expected Distribute, got {other:?}"),
        }
    }

    fn reason(s: &str) -> LocalReason {
        match scan_str(s) {
            ScanOutcome::Local(r) => r,
            other => panic!("{s}: expected Local, got {other:?}"),
        }
    }

    /// Commands that distribute: (command, input, output, argv after the scan).
    #[test]
    fn distributable_rows() {
        let rows: &[(&str, &str, &str, &str)] = &[
            ("gcc -c x.c -o x.o", "x.c", "x.o", "gcc -c x.c -o x.o"),
            ("gcc -c x.c", "x.c", "x.o", "gcc -c x.c -o x.o"),
            ("gcc -S x.c", "x.c", "x.s", "gcc -S x.c -o x.s"),
            ("gcc -c -S x.c", "x.c", "x.s", "gcc -c -S x.c -o x.s"),
            (
                "gcc -c sub/dir/x.c",
                "sub/dir/x.c",
                "x.o",
                "gcc -c sub/dir/x.c -o x.o",
            ),
            ("gcc -c x.c -oout.o", "x.c", "out.o", "gcc -c x.c -oout.o"),
            ("gcc -c x.c out.o", "x.c", "out.o", "gcc -c x.c out.o"),
            ("gcc -o x.o -c x.c", "x.c", "x.o", "gcc -o x.o -c x.c"),
            ("g++ -c x.cpp", "x.cpp", "x.o", "g++ -c x.cpp -o x.o"),
            ("gcc -c x.i", "x.i", "x.o", "gcc -c x.i -o x.o"),
            ("gcc -MD -c x.c", "x.c", "x.o", "gcc -MD -c x.c -o x.o"),
            (
                "gcc -MMD -MP -MG -c x.c",
                "x.c",
                "x.o",
                "gcc -MMD -MP -MG -c x.c -o x.o",
            ),
            (
                "gcc -MD -MF x.d -c x.c",
                "x.c",
                "x.o",
                "gcc -MD -MF x.d -c x.c -o x.o",
            ),
            (
                "gcc -MT y.c -c x.c",
                "x.c",
                "x.o",
                "gcc -MT y.c -c x.c -o x.o",
            ),
            (
                "gcc -MQ y.o -c x.c",
                "x.c",
                "x.o",
                "gcc -MQ y.o -c x.c -o x.o",
            ),
            (
                "gcc -MFx.d -MTx.o -MQx.o -c x.c",
                "x.c",
                "x.o",
                "gcc -MFx.d -MTx.o -MQx.o -c x.c -o x.o",
            ),
            ("gcc -x c -c x.c", "x.c", "x.o", "gcc -x c -c x.c -o x.o"),
            (
                "gcc -x c++ -c x.c",
                "x.c",
                "x.o",
                "gcc -x c++ -c x.c -o x.o",
            ),
            (
                "gcc -x objective-c -c x.m",
                "x.m",
                "x.o",
                "gcc -x objective-c -c x.m -o x.o",
            ),
            (
                "gcc -x cuda -c x.c",
                "x.c",
                "x.o",
                "gcc -x cuda -c x.c -o x.o",
            ),
            ("gcc -x go -c x.c", "x.c", "x.o", "gcc -x go -c x.c -o x.o"),
            ("gcc -c x.c -x", "x.c", "x.o", "gcc -c x.c -x -o x.o"),
            (
                "gcc -flto=auto -c x.c",
                "x.c",
                "x.o",
                "gcc -flto=auto -c x.c -o x.o",
            ),
            (
                "gcc -march=x86-64 -c x.c",
                "x.c",
                "x.o",
                "gcc -march=x86-64 -c x.c -o x.o",
            ),
            (
                "gcc -Wa,--noexecstack -c x.c",
                "x.c",
                "x.o",
                "gcc -Wa,--noexecstack -c x.c -o x.o",
            ),
            (
                "gcc -O2 -g -Wall -DX=1 -I inc -c x.c",
                "x.c",
                "x.o",
                "gcc -O2 -g -Wall -DX=1 -I inc -c x.c -o x.o",
            ),
            (
                "gcc -Wp,-DX,-UY -c x.c",
                "x.c",
                "x.o",
                "gcc -DX -UY -c x.c -o x.o",
            ),
            (
                "gcc -Wp,-MD,x.d -c x.c",
                "x.c",
                "x.o",
                "gcc -MD -MF x.d -c x.c -o x.o",
            ),
            (
                "gcc -Wp,-MMD,d/x.d,-DZ -c x.c",
                "x.c",
                "x.o",
                "gcc -MMD -MF d/x.d -DZ -c x.c -o x.o",
            ),
            ("gcc -c x.c -o", "x.c", "x.o", "gcc -c x.c -o -o x.o"),
            (
                "gcc -c a.b/x.cc",
                "a.b/x.cc",
                "x.o",
                "gcc -c a.b/x.cc -o x.o",
            ),
            ("gcc -c x.C", "x.C", "x.o", "gcc -c x.C -o x.o"),
            ("gcc -c x.c++", "x.c++", "x.o", "gcc -c x.c++ -o x.o"),
            ("gcc -c x.M", "x.M", "x.o", "gcc -c x.M -o x.o"),
            ("gcc -c x.c foo.h", "x.c", "x.o", "gcc -c x.c foo.h -o x.o"),
            (
                "gcc -c x.c -o conftest.o",
                "x.c",
                "conftest.o",
                "gcc -c x.c -o conftest.o",
            ),
            ("gcc - -c x.c", "x.c", "x.o", "gcc - -c x.c -o x.o"),
        ];
        for (cmd, input, output, after) in rows {
            let j = job(cmd);
            assert_eq!(j.input(), *input, "{cmd}");
            assert_eq!(j.output, *output, "{cmd}");
            assert_eq!(j.argv, words(after), "{cmd}");
        }
    }

    #[test]
    fn local_rows() {
        let s = |x: &str| x.to_string();
        let rows: Vec<(&str, LocalReason)> = vec![
            ("gcc x.c", LocalReason::NoCompile),
            ("gcc x.c -o x", LocalReason::NoCompile),
            (
                "gcc x.o y.o -o prog",
                LocalReason::TwoOutputs(s("x.o"), s("y.o")),
            ),
            ("gcc -E x.c", LocalReason::PreprocessOnly),
            ("gcc -c -E x.c", LocalReason::PreprocessOnly),
            ("gcc -M x.c", LocalReason::DependencyOnly(s("-M"))),
            ("gcc -MM -c x.c", LocalReason::DependencyOnly(s("-MM"))),
            ("gcc -Mfoo -c x.c", LocalReason::DependencyOnly(s("-Mfoo"))),
            (
                "gcc -march=native -c x.c",
                LocalReason::MachineSpecific(s("-march=native")),
            ),
            (
                "gcc -mtune=native -c x.c",
                LocalReason::MachineSpecific(s("-mtune=native")),
            ),
            ("gcc -flto -c x.c", LocalReason::UnsupportedFlag(s("-flto"))),
            (
                "gcc -Wa,-adhln=x.lst -c x.c",
                LocalReason::UnsupportedFlag(s("-Wa,-adhln=x.lst")),
            ),
            (
                "gcc -Wa,--MD,x.d -c x.c",
                LocalReason::UnsupportedFlag(s("-Wa,--MD,x.d")),
            ),
            (
                "gcc -specs=foo -c x.c",
                LocalReason::UnsupportedFlag(s("-specs=foo")),
            ),
            (
                "gcc -fprofile-arcs -c x.c",
                LocalReason::UnsupportedFlag(s("-fprofile-arcs")),
            ),
            (
                "gcc -ftest-coverage -c x.c",
                LocalReason::UnsupportedFlag(s("-ftest-coverage")),
            ),
            (
                "gcc --coverage -c x.c",
                LocalReason::UnsupportedFlag(s("--coverage")),
            ),
            (
                "gcc -fprofile-correction -c x.c",
                LocalReason::UnsupportedFlag(s("-fprofile-correction")),
            ),
            (
                "gcc -fprofile-generate -c x.c",
                LocalReason::UnsupportedFlag(s("-fprofile-generate")),
            ),
            (
                "gcc -fprofile-generate=d -c x.c",
                LocalReason::UnsupportedFlag(s("-fprofile-generate=d")),
            ),
            (
                "gcc -fprofile-use=d -c x.c",
                LocalReason::UnsupportedFlag(s("-fprofile-use=d")),
            ),
            (
                "gcc -fauto-profile=p -c x.c",
                LocalReason::UnsupportedFlag(s("-fauto-profile=p")),
            ),
            (
                "gcc -frepo -c x.c",
                LocalReason::UnsupportedFlag(s("-frepo")),
            ),
            (
                "gcc -x assembler -c x.c",
                LocalReason::Language(s("assembler")),
            ),
            ("gcc -xc -c x.c", LocalReason::Language(s("-xc"))),
            ("gcc -x none -c x.c", LocalReason::Language(s("none"))),
            ("gcc -dr -c x.c", LocalReason::UnsupportedFlag(s("-dr"))),
            ("gcc -c", LocalReason::NoInput),
            ("gcc -c -o x.o", LocalReason::NoInput),
            ("gcc -c x.s", LocalReason::NotSource(s("x.s"))),
            ("gcc -c x.S", LocalReason::NotSource(s("x.S"))),
            ("gcc -c x.c y.c", LocalReason::TwoInputs(s("x.c"), s("y.c"))),
            (
                "gcc -c x.c -o a.o -o b.o",
                LocalReason::TwoOutputs(s("a.o"), s("b.o")),
            ),
            (
                "gcc -c x.c -o a.o b.o",
                LocalReason::TwoOutputs(s("a.o"), s("b.o")),
            ),
            (
                "gcc -c x.c -o a.o -o",
                LocalReason::TwoOutputs(s("a.o"), s("")),
            ),
            ("gcc -c x.c -o -", LocalReason::OutputToStdout),
            ("gcc -c x.c -o-", LocalReason::OutputToStdout),
            ("gcc -c conftest.c", LocalReason::Autoconf),
            ("gcc -c dir/conftest.cpp -o x.o", LocalReason::Autoconf),
            ("gcc -c tmp.conftest.c", LocalReason::Autoconf),
            ("gcc -c .c", LocalReason::NotSource(s(".c"))),
            ("gcc -c d/.c", LocalReason::NotSource(s("d/.c"))),
            // The scanner does not know -I takes a value.
            (
                "gcc -I dir.c -c x.c",
                LocalReason::TwoInputs(s("dir.c"), s("x.c")),
            ),
            // -MF's value is skipped, -include's is not.
            (
                "gcc -include y.c -c x.c",
                LocalReason::TwoInputs(s("y.c"), s("x.c")),
            ),
            // The first rule that fires decides.
            ("gcc -E -march=native x.c", LocalReason::PreprocessOnly),
        ];
        for (cmd, want) in rows {
            assert_eq!(reason(cmd), want, "{cmd}");
        }
    }

    #[test]
    fn argument_errors() {
        assert_eq!(scan(&[]), Err(ArgsError::Empty));
        assert_eq!(
            scan(&words("-c x.c")),
            Err(ArgsError::CompilerIsOption("-c".into()))
        );
        assert_eq!(
            ArgsError::CompilerIsOption("-c".into()).to_string(),
            "unrecognized distcc option: -c"
        );
    }

    #[test]
    fn job_fields() {
        let j = job("gcc -S x.cc -o out/x.s");
        assert_eq!(j.kind, OutputKind::Assembly);
        assert_eq!(j.preprocessed_ext, ".ii");
        assert!(!j.preprocessed);
        assert_eq!(j.input_index, 2);

        let j = job("gcc -c x.mii");
        assert_eq!(j.kind, OutputKind::Object);
        assert_eq!(j.preprocessed_ext, ".mii");
        assert!(j.preprocessed);
    }

    #[test]
    fn wp_expansion() {
        let cases = [
            ("-Wp,a,b,c", "a b c"),
            ("-Wp,-MD,f.d", "-MD -MF f.d"),
            ("-Wp,-MMD,f.d,-DX", "-MMD -MF f.d -DX"),
            ("-Wp,-MD", "-MD"),
            ("-Wp,-DX,-MD,f.d", "-DX -MD -MF f.d"),
            ("-Wpx", "-Wpx"),
        ];
        for (arg, want) in cases {
            assert_eq!(
                expand_preprocessor_options(&[arg.to_string()]),
                words(want),
                "{arg}"
            );
        }
        assert_eq!(
            expand_preprocessor_options(&["-Wp,".to_string()]),
            vec![String::new()]
        );
        assert_eq!(
            expand_preprocessor_options(&["-Wp,-MD,".to_string()]),
            vec!["-MD".to_string(), "-MF".to_string(), String::new()]
        );
    }

    #[test]
    fn extensions() {
        for src in [
            "x.c", "x.cc", "x.cpp", "x.cxx", "x.cp", "x.c++", "x.C", "x.i", "x.ii", "x.m", "x.mm",
            "x.mi", "x.mii", "x.M", "d.d/x.c",
        ] {
            assert!(is_source(src), "{src}");
        }
        for not in [
            "x.s", "x.S", "x.h", "x.CC", "x.CPP", "x.o", "x", "x.", "x.c/", "d.c/x", "c",
        ] {
            assert!(!is_source(not), "{not}");
        }
        for pre in ["x.i", "x.ii", "x.mi", "x.mii"] {
            assert!(is_preprocessed(pre), "{pre}");
        }
        for not in ["x.c", "x.cc", "x.m", "x.I", "x.iii"] {
            assert!(!is_preprocessed(not), "{not}");
        }
        let map = [
            ("x.c", Some(".i")),
            ("x.i", Some(".i")),
            ("x.cc", Some(".ii")),
            ("x.cpp", Some(".ii")),
            ("x.cxx", Some(".ii")),
            ("x.cp", Some(".ii")),
            ("x.c++", Some(".ii")),
            ("x.C", Some(".ii")),
            ("x.ii", Some(".ii")),
            ("x.m", Some(".mi")),
            ("x.mi", Some(".mi")),
            ("x.mm", Some(".mii")),
            ("x.M", Some(".mii")),
            ("x.mii", Some(".mii")),
            ("x.s", Some(".s")),
            ("x.S", Some(".s")),
            ("x.h", None),
            ("x", None),
        ];
        for (path, want) in map {
            assert_eq!(preprocessed_ext(path), want, "{path}");
        }
    }

    #[test]
    fn reasons_read_as_sentences() {
        assert_eq!(
            LocalReason::MachineSpecific("-march=native".into()).to_string(),
            "-march=native: the result depends on this machine's CPU"
        );
        let all = [
            LocalReason::NoCompile,
            LocalReason::PreprocessOnly,
            LocalReason::DependencyOnly("-M".into()),
            LocalReason::UnsupportedFlag("-flto".into()),
            LocalReason::UnsupportedFlag("-specs=x".into()),
            LocalReason::UnsupportedFlag("-Wa,-a".into()),
            LocalReason::UnsupportedFlag("-frepo".into()),
            LocalReason::UnsupportedFlag("-dr".into()),
            LocalReason::UnsupportedFlag("--coverage".into()),
            LocalReason::Language("assembler".into()),
            LocalReason::Language("-xc".into()),
            LocalReason::NoInput,
            LocalReason::TwoInputs("a.c".into(), "b.c".into()),
            LocalReason::TwoOutputs("a.o".into(), "b.o".into()),
            LocalReason::NotSource("x.s".into()),
            LocalReason::OutputToStdout,
            LocalReason::Autoconf,
        ];
        for r in all {
            let text = r.to_string();
            assert!(
                text.len() > 20 && !text.contains("distcc 3.4 always"),
                "{r:?}: {text}"
            );
        }
    }

    #[test]
    fn never_panics_on_odd_arguments() {
        let odd = [
            "", "-", "-o", "-x", "-MF", "-M", ".", ".c", "/", "x.c", "-c", "-S", "-Wp,", "-Wp,-MD",
        ];
        for a in odd {
            for b in odd {
                for c in odd {
                    let _ = scan(&["gcc".to_string(), a.into(), b.into(), c.into()]);
                }
            }
        }
    }
}
