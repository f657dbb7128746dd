//! `dportage membership-token --for ID`: a membership token bound to one
//! person's key, signed with the daemon's identity in `$DPORTAGE_DIR` (give
//! it to that person; a copy in anyone else's hands links nobody).
//! `dportage unlink ID [--daemon ID] [--coordinator URL]`: end a link, signed
//! by the daemon (or by the person itself).

use std::ffi::OsString;
use std::sync::Arc;

use crate::exitcode;
use crate::network::identity::{self, Identity, IdentityId};
use crate::network::{unix_now, CoordinatorClient};

/// `dportage membership-token --for ID`: prints the token (JSON) on stdout.
pub fn token_main(args: Vec<OsString>) -> i32 {
    let args: Vec<String> = args
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let person = match args.as_slice() {
        [flag, id] if flag == "--for" => id.parse::<IdentityId>(),
        _ => {
            eprintln!("usage: dportage membership-token --for ID  (the person's identity.pub, 64 hex digits)");
            return exitcode::BAD_ARGUMENTS;
        }
    };
    let Ok(person) = person else {
        eprintln!(
            "dportage membership-token: --for needs 64 hex digits (the person's identity.pub)"
        );
        return exitcode::BAD_ARGUMENTS;
    };
    let dir = identity::dportage_dir();
    let me = match Identity::load(&dir) {
        Ok(me) => me,
        Err(e) => {
            eprintln!(
                "dportage membership-token: {e}; run it as the daemon's user, with its DPORTAGE_DIR"
            );
            return exitcode::BAD_ARGUMENTS;
        }
    };
    let token = me.membership_token_for(person, unix_now());
    match serde_json::to_string_pretty(&token) {
        Ok(text) => {
            println!("{text}");
            eprintln!(
                "dportage: a token for {person} only, valid 7 days: they save it as membership.json \
                 in their DPORTAGE_DIR (or point DPORTAGE_MEMBERSHIP at it) and run dportage"
            );
            0
        }
        Err(e) => {
            eprintln!("dportage membership-token: {e}");
            exitcode::DISTCC_FAILED
        }
    }
}

/// `dportage unlink PERSON [--daemon ID] [--coordinator URL]`.
pub fn unlink_main(args: Vec<OsString>) -> i32 {
    let usage = || {
        eprintln!("usage: dportage unlink PERSON [--daemon ID] [--coordinator URL]");
        exitcode::BAD_ARGUMENTS
    };
    let mut coordinator = std::env::var("DPORTAGE_COORDINATOR").ok();
    let (mut person, mut daemon) = (None, None);
    let mut it = args.into_iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(a) = it.next() {
        match a.as_str() {
            "--coordinator" => coordinator = it.next(),
            "--daemon" => match it.next().map(|v| v.parse::<IdentityId>()) {
                Some(Ok(id)) => daemon = Some(id),
                _ => return usage(),
            },
            other => match other.parse::<IdentityId>() {
                Ok(id) if person.is_none() => person = Some(id),
                _ => return usage(),
            },
        }
    }
    let (Some(person), Some(url)) = (person, coordinator.filter(|u| !u.trim().is_empty())) else {
        return usage();
    };
    let dir = identity::dportage_dir();
    let result = (|| -> Result<bool, crate::network::NetworkError> {
        let me = Arc::new(Identity::load_or_create(&dir)?);
        // Without --daemon: this identity is the daemon.
        let daemon = daemon.unwrap_or_else(|| me.id());
        let client = CoordinatorClient::new(url.trim(), me)?.expecting_pinned_key(&dir)?;
        let rt = crate::runtime::current_thread()?;
        Ok(rt.block_on(client.unlink(person, daemon))?.unlinked)
    })();
    match result {
        Ok(true) => {
            println!("unlinked {person}");
            0
        }
        Ok(false) => {
            eprintln!("dportage unlink: {person} was not linked to that daemon");
            exitcode::BAD_ARGUMENTS
        }
        Err(e) => {
            eprintln!("dportage unlink: {e}");
            exitcode::DISTCC_FAILED
        }
    }
}
