//! A man-in-the-middle that turns an honest distcc server into a lying one.
//! Dual dispatch is only as good as its tests against liars, and the demo needs a
//! liar too; putting the lie in a proxy lets it sit in front of real distccd 3.4
//! as well as in front of our own server.

use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::UsageError;
use crate::protocol::{Limits, ProtocolVersion, ReplyDecoder, RequestDecoder, RequestEvent};
use crate::transport::{FrameReader, ReadPolicy, TransportError};

/// The proxy's reads. No patience: it sits between a test's own client and
/// server, and the client's timeouts are what a test exercises.
const READS: ReadPolicy = ReadPolicy {
    min_read: 64 * 1024,
    max_read: 4 * 1024 * 1024,
    patience: None,
};

/// What the proxy does to each successful reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lie {
    /// Pass replies through unchanged (an honest hop, for control runs).
    Honest,
    /// Flip one byte in the middle of the object.
    FlipObjectByte,
    /// Replace the whole object with these bytes.
    ReplaceObject(Vec<u8>),
    /// Report this wait status instead of the real one (object dropped if non-zero).
    ExitStatus(u32),
    /// Append this many zero bytes to the object.
    Oversize(usize),
    /// Send the first half of the honest reply, then close: a host that dies
    /// mid-reply (a failure, not a vote).
    Truncate,
    /// Answer with bytes that are not distcc protocol (a failure, not a vote).
    Garbage,
}

impl std::str::FromStr for Lie {
    type Err = UsageError;
    fn from_str(s: &str) -> Result<Self, UsageError> {
        match s {
            "honest" => Ok(Lie::Honest),
            "flip" => Ok(Lie::FlipObjectByte),
            "replace" => Ok(Lie::ReplaceObject(b"\x7fELF trojan".to_vec())),
            "oversize" => Ok(Lie::Oversize(64 << 20)),
            "truncate" => Ok(Lie::Truncate),
            "garbage" => Ok(Lie::Garbage),
            other => {
                match other.strip_prefix("status=") {
                    Some(v) => v.parse::<u32>().map(Lie::ExitStatus).map_err(|source| {
                        UsageError::BadStatus {
                            value: v.to_owned(),
                            source,
                        }
                    }),
                    None => Err(UsageError::UnknownLie(other.to_owned())),
                }
            }
        }
    }
}

impl Lie {
    /// Apply the lie to a decoded reply.
    pub fn apply(&self, reply: &mut crate::protocol::Reply) {
        match self {
            Lie::Honest | Lie::Truncate | Lie::Garbage => {}
            Lie::FlipObjectByte => {
                if !reply.object.is_empty() {
                    let mid = reply.object.len() / 2;
                    reply.object[mid] ^= 0x01;
                }
            }
            Lie::ReplaceObject(bytes) => {
                if reply.status == 0 {
                    reply.object = bytes.clone();
                }
            }
            Lie::ExitStatus(status) => {
                reply.status = *status;
                if *status != 0 {
                    reply.object.clear();
                }
            }
            Lie::Oversize(extra) => {
                if reply.status == 0 {
                    reply.object.resize(reply.object.len() + extra, 0);
                }
            }
        }
    }
}

/// Serve connections on `listener` forever, forwarding each job to `upstream`
/// and lying about the reply: about every reply, or (`target`) only about
/// jobs whose preprocessed input contains those bytes. A targeted liar passes
/// challenge jobs and every other job honestly, as a patient attacker's host
/// would, and lies where it chose to.
pub async fn run_lying_proxy(
    listener: TcpListener,
    upstream: SocketAddr,
    lie: Lie,
    target: Option<Vec<u8>>,
) {
    let target = std::sync::Arc::new(target);
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let (lie, target) = (lie.clone(), target.clone());
        tokio::spawn(async move {
            if let Err(e) = proxy_one(client, upstream, &lie, target.as_deref()).await {
                tracing::debug!("lying proxy: {e}");
            }
        });
    }
}

async fn proxy_one(
    mut client: TcpStream,
    upstream: SocketAddr,
    lie: &Lie,
    target: Option<&[u8]>,
) -> Result<(), TransportError> {
    let limits = Limits::default();
    // Read the whole request, remembering its raw bytes to forward verbatim.
    let mut request_bytes = Vec::new();
    let mut version = ProtocolVersion::V1;
    let mut targeted = target.is_none();
    let mut requests = FrameReader::new(&mut client, RequestDecoder::new(limits), READS);
    loop {
        match requests
            .next_event(|chunk| request_bytes.extend_from_slice(chunk))
            .await
        {
            Ok(RequestEvent::Version(v)) => version = v,
            Ok(RequestEvent::Argv(_) | RequestEvent::Ticket(_)) => {}
            // It lies about compiles only; a fetch gets a closed connection.
            Ok(RequestEvent::Fetch(_)) => return Ok(()),
            Ok(RequestEvent::Doti(input)) => {
                if let Some(t) = target {
                    targeted = !t.is_empty() && input.windows(t.len()).any(|w| w == t);
                }
                break;
            }
            // A client that gives up is not worth a log line.
            Err(TransportError::Closed { .. }) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    let mut server = TcpStream::connect(upstream).await?;
    server.write_all(&request_bytes).await?;
    let mut replies = FrameReader::new(&mut server, ReplyDecoder::new(version, limits), READS);
    let mut reply = match replies.next_event(|_| {}).await {
        Ok(reply) => reply,
        Err(TransportError::Closed { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    let lie = if targeted { lie } else { &Lie::Honest };
    lie.apply(&mut reply);
    client.write_all(&lie.wire_bytes(&reply)).await?;
    Ok(())
}

impl Lie {
    /// The bytes the proxy sends for `reply` (after [`Lie::apply`]).
    pub fn wire_bytes(&self, reply: &crate::protocol::Reply) -> Vec<u8> {
        match self {
            Lie::Truncate => {
                let mut bytes = reply.encode();
                bytes.truncate(bytes.len() / 2);
                bytes
            }
            Lie::Garbage => b"HTTP/1.1 400 Bad Request\r\n\r\nnot distcc".to_vec(),
            _ => reply.encode(),
        }
    }
}

/// `dportage __liar --listen ADDR --upstream ADDR --lie KIND
/// [--only-if-input-contains TEXT]`: a stand-alone lying proxy for tests
/// against real distccd. Prints the bound address on stdout.
pub fn liar_main(args: Vec<std::ffi::OsString>) -> i32 {
    let args: Vec<String> = args
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut listen = "127.0.0.1:0".to_string();
    let mut upstream = None;
    let mut lie = Lie::FlipObjectByte;
    let mut target = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let value = it.next();
        match (a.as_str(), value) {
            ("--listen", Some(v)) => listen = v.clone(),
            ("--upstream", Some(v)) => upstream = v.parse::<SocketAddr>().ok(),
            ("--only-if-input-contains", Some(v)) => target = Some(v.clone().into_bytes()),
            ("--lie", Some(v)) => match v.parse() {
                Ok(l) => lie = l,
                Err(e) => {
                    eprintln!("dportage __liar: {e}");
                    return crate::exitcode::BAD_ARGUMENTS;
                }
            },
            _ => {
                eprintln!(
                    "usage: dportage __liar --listen ADDR --upstream ADDR --lie KIND \
                     [--only-if-input-contains TEXT]"
                );
                return crate::exitcode::BAD_ARGUMENTS;
            }
        }
    }
    let Some(upstream) = upstream else {
        eprintln!("dportage __liar: --upstream ADDR:PORT is required");
        return crate::exitcode::BAD_ARGUMENTS;
    };
    let rt = match crate::runtime::current_thread() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dportage __liar: {e}");
            return crate::exitcode::DISTCC_FAILED;
        }
    };
    rt.block_on(async move {
        let listener = match TcpListener::bind(&listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("dportage __liar: cannot listen on {listen}: {e}");
                return crate::exitcode::BIND_FAILED;
            }
        };
        if let Ok(addr) = listener.local_addr() {
            println!("{addr}");
        }
        run_lying_proxy(listener, upstream, lie, target).await;
        0
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Reply;

    fn reply() -> Reply {
        Reply {
            version: ProtocolVersion::V1,
            status: 0,
            stderr: Vec::new(),
            stdout: Vec::new(),
            object: b"\x7fELF honest object".to_vec(),
        }
    }

    #[test]
    fn every_lie_changes_what_it_says() {
        let honest = reply();
        let lied = |lie: &str| {
            let lie: Lie = lie.parse().unwrap();
            let mut r = reply();
            lie.apply(&mut r);
            (r, lie)
        };
        let (r, _) = lied("flip");
        assert_eq!(r.object.len(), honest.object.len());
        assert_ne!(r.object, honest.object);
        let (r, _) = lied("replace");
        assert_ne!(r.object, honest.object);
        let (r, _) = lied("status=256");
        assert_eq!(r.status, 256);
        assert!(r.object.is_empty());
        let (r, _) = lied("oversize");
        assert!(r.object.len() > honest.object.len() + (1 << 20));
        let (r, lie) = lied("honest");
        assert_eq!(lie.wire_bytes(&r), honest.encode());
        let (r, lie) = lied("truncate");
        assert_eq!(lie.wire_bytes(&r).len(), honest.encode().len() / 2);
        let (r, lie) = lied("garbage");
        assert!(!lie.wire_bytes(&r).starts_with(b"DONE"));
        assert_eq!(
            "bogus".parse::<Lie>(),
            Err(UsageError::UnknownLie("bogus".into()))
        );
        assert!(matches!(
            "status=x".parse::<Lie>(),
            Err(UsageError::BadStatus { value, .. }) if value == "x"
        ));
    }
}
