//! Client-side rewriting: the local preprocessor command and the argv sent to the server.

use super::scan::CompileJob;

/// The preprocessor command: every `-o X`/`-oX` removed, `-c`/`-S` → `-E`.
pub fn preprocessor_argv(job: &CompileJob) -> Vec<String> {
    let _ = job;
    todo!()
}

/// The argv sent to the server: the job's argv minus options that only matter to
/// the preprocessor or linker (spec §8.6), e.g.
/// `gcc -DFOO=1 -I/usr/include -include stdio.h -c x.c -o x.o` → `gcc -c x.c -o x.o`.
pub fn server_argv(job: &CompileJob) -> Vec<String> {
    let _ = job;
    todo!()
}
