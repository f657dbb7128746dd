//! distcc 3.4's argument scanner (spec §8.3): distributable, or local and why.

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
        let _ = f;
        todo!()
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

/// Scan `argv` (argv[0] = compiler) with distcc 3.4's rules.
pub fn scan(argv: &[String]) -> Result<ScanOutcome, ArgsError> {
    let _ = argv;
    todo!()
}

/// Is `path` a source file distcc distributes (by extension, case-sensitive)?
pub fn is_source(path: &str) -> bool {
    let _ = path;
    todo!()
}

/// Is `path` already preprocessed (`.i .ii .mi .mii`)?
pub fn is_preprocessed(path: &str) -> bool {
    let _ = path;
    todo!()
}
