//! The local preprocessor run of plain mode (spec §8.6): the command with `-o`
//! removed and `-c`/`-S` turned into `-E`, stdin `/dev/null`, stdout to a
//! temporary file under `TMPDIR`. Dependency files (`-MD`, `-MMD`) are written by
//! this run, because the server never sees those options.

use std::path::PathBuf;
use std::process::Stdio;

use tempfile::TempPath;

use crate::args::{preprocessor_argv, CompileJob};

use super::cleanup::{register, CleanupGuard};
use super::settings::Settings;
use super::slots::SlotGuard;

/// The preprocessed source of a job, ready to send.
#[derive(Debug)]
pub struct Preprocessed {
    pub source: Vec<u8>,
    /// What the preprocessor printed (`#warning`, …). Shown only if the job is
    /// then done remotely; a local compile prints its own.
    pub stderr: Vec<u8>,
    /// The temporary file, deleted on drop unless `DISTCC_SAVE_TEMPS=1` kept it.
    _temp: Option<TempPath>,
    /// Dropped after `_temp` (field order), so the file is deleted first.
    _cleanup: Option<CleanupGuard>,
}

/// Why there is no preprocessed source: every case means "compile locally", where
/// the user then sees the compiler's own diagnostics.
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    #[error(
        "cannot create a temporary file in {dir}: {source} (set TMPDIR to a writable directory)"
    )]
    TempFile { dir: String, source: std::io::Error },
    #[error("cannot run the preprocessor {compiler:?}: {source}")]
    Spawn {
        compiler: String,
        source: std::io::Error,
    },
    #[error("the preprocessor failed ({status})")]
    Failed {
        status: std::process::ExitStatus,
        stderr: Vec<u8>,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

/// Extra preprocessor arguments so the dependency file matches a local compile.
///
/// DECISION (spec §8.7, checklist item 27): distcc 3.4 runs the preprocessor
/// without `-o`, so `-MD -c x.c -o sub/x.o` writes `x.d` in the current directory
/// with the target `x.o:` — unlike a local compile, which writes `sub/x.d` with
/// `sub/x.o:`. We do what gcc's driver itself does when it compiles with
/// `-MD`/`-MMD` (`gcc -###` shows `-MD sub/x.d -MQ sub/x.o` for cc1): add
/// `-MQ <output>` unless the user gave `-MT`/`-MQ`, and `-MF <output with its
/// extension replaced by .d>` unless the user gave `-MF`. `-MQ` rather than `-MT`
/// because gcc quotes the output the same way (`$` → `$$`), so even odd names give
/// the same `.d` as a local compile. Builds that rely on 3.4's `x.o:` quirk are
/// unlikely; builds that rely on gcc's documented behaviour are common (make's
/// `-include $(OBJS:.o=.d)`).
pub fn dependency_args(job: &CompileJob) -> Vec<String> {
    let args = job.argv.get(1..).unwrap_or_default();
    if !args.iter().any(|a| a == "-MD" || a == "-MMD") {
        return Vec::new();
    }
    let mut extra = Vec::new();
    if !args
        .iter()
        .any(|a| a.starts_with("-MT") || a.starts_with("-MQ"))
    {
        extra.push("-MQ".to_owned());
        extra.push(job.output.clone());
    }
    if !args.iter().any(|a| a.starts_with("-MF")) {
        extra.push("-MF".to_owned());
        extra.push(dependency_file_for(&job.output));
    }
    extra
}

/// gcc's name for the `.d` file of `output`: the last extension of the file name
/// replaced by `.d` (`sub/x.o` → `sub/x.d`, `x.o.tmp` → `x.o.d`), or `.d`
/// appended when the name has none (`sub.dir/prog` → `sub.dir/prog.d`).
pub fn dependency_file_for(output: &str) -> String {
    let name_start = output.rfind('/').map_or(0, |i| i + 1);
    match output[name_start..].rfind('.') {
        Some(dot) => format!("{}.d", &output[..name_start + dot]),
        None => format!("{output}.d"),
    }
}

/// The full preprocessor command for `job`.
pub fn preprocessor_command(job: &CompileJob) -> Vec<String> {
    let mut argv = preprocessor_argv(job);
    argv.extend(dependency_args(job));
    argv
}

/// Produce the source to send: run the preprocessor, or read an input that is
/// already preprocessed. `cpp_slot` (a local preprocessor slot) is released as
/// soon as the preprocessor exits.
pub async fn preprocess(
    job: &CompileJob,
    settings: &Settings,
    cpp_slot: Option<SlotGuard>,
) -> Result<Preprocessed, PreprocessError> {
    if job.preprocessed {
        drop(cpp_slot);
        let path = job.input();
        // A plain read: tokio::fs would hop to a blocking thread for one local file.
        let source = std::fs::read(path).map_err(|source| PreprocessError::Read {
            path: path.to_owned(),
            source,
        })?;
        return Ok(Preprocessed {
            source,
            stderr: Vec::new(),
            _temp: None,
            _cleanup: None,
        });
    }

    let temp = tempfile::Builder::new()
        .prefix("dportage_")
        .suffix(job.preprocessed_ext)
        .rand_bytes(8)
        .tempfile_in(&settings.tmpdir)
        .map_err(|source| PreprocessError::TempFile {
            dir: settings.tmpdir.display().to_string(),
            source,
        })?;
    let temp_error = |source| PreprocessError::TempFile {
        dir: settings.tmpdir.display().to_string(),
        source,
    };
    let stdout = temp.as_file().try_clone().map_err(temp_error)?;
    let temp = temp.into_temp_path();
    let cleanup = Some(register(&temp));

    let argv = preprocessor_command(job);
    tracing::debug!("preprocessing: {}", argv.join(" "));
    let compiler = argv.first().cloned().unwrap_or_default();
    let child = tokio::process::Command::new(&compiler)
        .args(argv.get(1..).unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::piped())
        .env("_DISTCC_SAFEGUARD", settings.child_safeguard())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| PreprocessError::Spawn {
            compiler: compiler.clone(),
            source,
        })?;
    let output = child
        .wait_with_output()
        .await
        .map_err(|source| PreprocessError::Spawn { compiler, source })?;
    drop(cpp_slot);

    let (path, temp) = keep_if_asked(temp, settings);
    if !output.status.success() {
        return Err(PreprocessError::Failed {
            status: output.status,
            stderr: output.stderr,
        });
    }
    let source = std::fs::read(&path).map_err(|source| PreprocessError::Read {
        path: path.display().to_string(),
        source,
    })?;
    Ok(Preprocessed {
        source,
        stderr: output.stderr,
        _temp: temp,
        _cleanup: cleanup,
    })
}

/// With `DISTCC_SAVE_TEMPS=1` the file is kept (and named in the log) and no
/// handle is returned; otherwise the handle deletes it on drop.
fn keep_if_asked(temp: TempPath, settings: &Settings) -> (PathBuf, Option<TempPath>) {
    if !settings.save_temps {
        return (temp.to_path_buf(), Some(temp));
    }
    match temp.keep() {
        Ok(kept) => {
            tracing::info!("kept preprocessed source {}", kept.display());
            (kept, None)
        }
        Err(e) => (e.path.to_path_buf(), Some(e.path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::OutputKind;

    fn job(argv: &[&str], output: &str) -> CompileJob {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        let input_index = argv.iter().position(|a| a.ends_with(".c")).unwrap();
        CompileJob {
            argv,
            input_index,
            output: output.to_owned(),
            kind: OutputKind::Object,
            preprocessed: false,
            preprocessed_ext: ".i",
        }
    }

    #[test]
    fn dependency_file_names_follow_gcc() {
        assert_eq!(dependency_file_for("sub/x.o"), "sub/x.d");
        assert_eq!(dependency_file_for("x.o"), "x.d");
        assert_eq!(dependency_file_for("x.o.tmp"), "x.o.d");
        assert_eq!(dependency_file_for("sub.dir/prog"), "sub.dir/prog.d");
        assert_eq!(dependency_file_for("sub/.hidden"), "sub/.d");
        assert_eq!(dependency_file_for("a b/x.obj"), "a b/x.d");
    }

    #[test]
    fn md_gets_target_and_file_of_the_output() {
        let j = job(&["gcc", "-MD", "-c", "x.c", "-o", "sub/x.o"], "sub/x.o");
        assert_eq!(dependency_args(&j), ["-MQ", "sub/x.o", "-MF", "sub/x.d"]);
        let j = job(&["gcc", "-MMD", "-c", "x.c", "-o", "x.o"], "x.o");
        assert_eq!(dependency_args(&j), ["-MQ", "x.o", "-MF", "x.d"]);
    }

    #[test]
    fn user_choices_are_kept() {
        let j = job(
            &["gcc", "-MD", "-MF", "deps/x.d", "-c", "x.c", "-o", "o/x.o"],
            "o/x.o",
        );
        assert_eq!(dependency_args(&j), ["-MQ", "o/x.o"]);
        let j = job(
            &["gcc", "-MD", "-MT", "tgt", "-c", "x.c", "-o", "o/x.o"],
            "o/x.o",
        );
        assert_eq!(dependency_args(&j), ["-MF", "o/x.d"]);
        let j = job(
            &[
                "gcc", "-MMD", "-MQtgt", "-MFx.dep", "-c", "x.c", "-o", "x.o",
            ],
            "x.o",
        );
        assert!(dependency_args(&j).is_empty());
    }

    #[test]
    fn no_dependency_options_no_extra_arguments() {
        let j = job(&["gcc", "-c", "x.c", "-o", "x.o"], "x.o");
        assert!(dependency_args(&j).is_empty());
        // -MF alone does not ask for a dependency file when compiling.
        let j = job(&["gcc", "-MF", "x.d", "-c", "x.c", "-o", "x.o"], "x.o");
        assert!(dependency_args(&j).is_empty());
    }
}
