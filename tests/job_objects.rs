//! Objects from `run_job` are byte-identical to local compiles of the same
//! preprocessed input, and do not depend on the job directory.

mod job_common;

use job_common::*;

const C_SOURCE: &str = "#include <stdio.h>\nstatic int twice(int x) { return 2 * x; }\n\
int main(void) { printf(\"%d\\n\", twice(21)); return 0; }\n";

#[tokio::test]
async fn plain_c_matches_local_compile() {
    let root = tempfile::tempdir().unwrap();
    let client = tempfile::tempdir().unwrap();
    let cfg = config(root.path());
    let pre = preprocess("gcc", client.path(), "hello.c", C_SOURCE, &[]);
    let local = local_compile("gcc", client.path(), "hello.i", &pre, &["-O2"]);
    let out = compile("gcc -O2 -c hello.c -o hello.o", &pre, &cfg).await;
    assert_eq!(out.status, 0, "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    assert!(out.object == local, "object differs from the local compile");
    assert_empty(root.path());
}
