//! distcc's monitor state file, `$DISTCC_DIR/state/binstate_<pid>` (spec
//! §8.12): `struct dcc_task_state` written whole in native byte order. On
//! x86-64 (LP64) it is 296 bytes: `u64 struct_size`, `u64 magic`, `u64 pid`,
//! `char file[128]`, `char host[128]`, `i32 slot`, `i32 phase`, and the
//! `next` pointer of the monitor's list (always 0 on disk).
//!
//! distcc's monitors read every file of the state directory whose name
//! starts with `binstate_` and show those whose pid is alive, so one
//! process may keep several (one per host working on its job).

/// `sizeof(struct dcc_task_state)` on LP64; the monitors refuse other sizes.
pub const STRUCT_SIZE: usize = 296;
/// `DCC_STATE_MAGIC` ("DIH\0" as a number).
pub const MAGIC: u64 = 0x4449_4800;
/// distcc's monitors read only files whose name starts with this.
pub const PREFIX: &str = "binstate_";
/// `file` and `host` are NUL-terminated in 128 bytes.
pub const FIELD: usize = 128;

const FILE_AT: usize = 24;
const HOST_AT: usize = FILE_AT + FIELD;
const SLOT_AT: usize = HOST_AT + FIELD;
const PHASE_AT: usize = SLOT_AT + 4;
const NEXT_AT: usize = PHASE_AT + 4;

/// `enum dcc_phase`, in distcc's numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    Startup = 0,
    Blocked = 1,
    Connect = 2,
    Preprocess = 3,
    Send = 4,
    Compile = 5,
    Receive = 6,
    Done = 7,
}

impl Phase {
    /// distcc's number for a phase; out-of-range numbers read as `Compile`,
    /// as distcc's monitor reads them.
    pub fn from_number(n: i32) -> Phase {
        match n {
            0 => Phase::Startup,
            1 => Phase::Blocked,
            2 => Phase::Connect,
            3 => Phase::Preprocess,
            4 => Phase::Send,
            6 => Phase::Receive,
            7 => Phase::Done,
            _ => Phase::Compile,
        }
    }

    /// The name distcc's monitors show (`dcc_get_phase_name`).
    pub fn name(self) -> &'static str {
        match self {
            Phase::Startup => "Startup",
            Phase::Blocked => "Blocked",
            Phase::Connect => "Connect",
            Phase::Preprocess => "Preprocess",
            Phase::Send => "Send",
            Phase::Compile => "Compile",
            Phase::Receive => "Receive",
            Phase::Done => "Done",
        }
    }
}

/// One job's state as the monitors see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskState {
    pub pid: u64,
    /// The input's base name (distcc keeps at most 127 bytes).
    pub file: String,
    /// The host name or address ("localhost" for a compile here).
    pub host: String,
    /// The slot taken on that host.
    pub slot: i32,
    pub phase: Phase,
}

/// Why bytes are not a state file this format describes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{0} bytes where a state file has {STRUCT_SIZE} (a partly written file, or another platform's)")]
    Size(usize),
    #[error("wrong magic number {0:#x}")]
    Magic(u64),
    #[error("the file says its structure has {0} bytes (a distcc of another version?)")]
    StructSize(u64),
}

/// The file name for `pid`; `flight` numbers the extra files of a job sent
/// to several hosts at once (`binstate_<pid>_<n>`).
pub fn file_name(pid: u32, flight: Option<u32>) -> String {
    match flight {
        None => format!("{PREFIX}{pid}"),
        Some(n) => format!("{PREFIX}{pid}_{n}"),
    }
}

/// The bytes of `state`, as distcc writes them: the names cut to 127 bytes
/// (at a character boundary, so a reader gets valid text) and NUL-padded.
pub fn encode(state: &TaskState) -> [u8; STRUCT_SIZE] {
    let mut out = [0u8; STRUCT_SIZE];
    out[0..8].copy_from_slice(&(STRUCT_SIZE as u64).to_ne_bytes());
    out[8..16].copy_from_slice(&MAGIC.to_ne_bytes());
    out[16..24].copy_from_slice(&state.pid.to_ne_bytes());
    put_name(&mut out[FILE_AT..HOST_AT], &state.file);
    put_name(&mut out[HOST_AT..SLOT_AT], &state.host);
    out[SLOT_AT..PHASE_AT].copy_from_slice(&state.slot.to_ne_bytes());
    out[PHASE_AT..NEXT_AT].copy_from_slice(&(state.phase as i32).to_ne_bytes());
    out
}

/// Read a state file, checking it as distcc's monitor does (size, magic,
/// `struct_size`); names end at their first NUL.
pub fn decode(bytes: &[u8]) -> Result<TaskState, DecodeError> {
    if bytes.len() != STRUCT_SIZE {
        return Err(DecodeError::Size(bytes.len()));
    }
    let u64_at = |at: usize| u64::from_ne_bytes(bytes[at..at + 8].try_into().unwrap_or([0; 8]));
    let i32_at = |at: usize| i32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap_or([0; 4]));
    let magic = u64_at(8);
    if magic != MAGIC {
        return Err(DecodeError::Magic(magic));
    }
    let size = u64_at(0);
    if size != STRUCT_SIZE as u64 {
        return Err(DecodeError::StructSize(size));
    }
    Ok(TaskState {
        pid: u64_at(16),
        file: get_name(&bytes[FILE_AT..HOST_AT]),
        host: get_name(&bytes[HOST_AT..SLOT_AT]),
        slot: i32_at(SLOT_AT),
        phase: Phase::from_number(i32_at(PHASE_AT)),
    })
}

fn put_name(field: &mut [u8], name: &str) {
    let mut end = name.len().min(field.len() - 1);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    field[..end].copy_from_slice(&name.as_bytes()[..end]);
}

fn get_name(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(file: &str, host: &str, slot: i32, phase: Phase) -> TaskState {
        TaskState {
            pid: 4242,
            file: file.to_owned(),
            host: host.to_owned(),
            slot,
            phase,
        }
    }

    #[test]
    fn layout_is_distccs() {
        let bytes = encode(&state("hello.c", "127.0.0.2", 1, Phase::Compile));
        assert_eq!(bytes.len(), 296);
        assert_eq!(&bytes[0..8], &296u64.to_ne_bytes());
        assert_eq!(&bytes[8..16], &0x4449_4800u64.to_ne_bytes());
        assert_eq!(&bytes[16..24], &4242u64.to_ne_bytes());
        assert_eq!(&bytes[24..32], b"hello.c\0");
        assert!(bytes[32..152].iter().all(|&b| b == 0));
        assert_eq!(&bytes[152..162], b"127.0.0.2\0");
        assert_eq!(&bytes[280..284], &1i32.to_ne_bytes());
        assert_eq!(&bytes[284..288], &5i32.to_ne_bytes());
        assert_eq!(&bytes[288..296], &[0; 8]);
    }

    #[test]
    fn round_trips_and_phases() {
        let table = [
            (Phase::Startup, 0),
            (Phase::Blocked, 1),
            (Phase::Connect, 2),
            (Phase::Preprocess, 3),
            (Phase::Send, 4),
            (Phase::Compile, 5),
            (Phase::Receive, 6),
            (Phase::Done, 7),
        ];
        for (phase, number) in table {
            assert_eq!(phase as i32, number);
            assert_eq!(Phase::from_number(number), phase);
            let s = state("a.c", "localhost", 0, phase);
            assert_eq!(decode(&encode(&s)), Ok(s));
        }
        // distcc's monitor shows an unknown phase as Compile.
        assert_eq!(Phase::from_number(99), Phase::Compile);
        assert_eq!(Phase::from_number(-1), Phase::Compile);
        assert_eq!(Phase::Preprocess.name(), "Preprocess");
    }

    #[test]
    fn long_names_are_cut_at_127_bytes_on_a_character() {
        let long = "é".repeat(100); // 200 bytes
        let s = state(&long, &"h".repeat(300), 0, Phase::Send);
        let bytes = encode(&s);
        assert_eq!(bytes[FILE_AT + 127], 0);
        let back = decode(&bytes).unwrap();
        assert_eq!(back.file, "é".repeat(63));
        assert_eq!(back.host, "h".repeat(127));
    }

    #[test]
    fn refuses_what_distccmon_refuses() {
        let good = encode(&state("a.c", "h", 0, Phase::Send));
        assert_eq!(decode(&good[..100]), Err(DecodeError::Size(100)));
        assert_eq!(decode(&[]), Err(DecodeError::Size(0)));
        let mut bad = good;
        bad[8] ^= 1;
        assert!(matches!(decode(&bad), Err(DecodeError::Magic(_))));
        let mut bad = good;
        bad[0..8].copy_from_slice(&300u64.to_ne_bytes());
        assert_eq!(decode(&bad), Err(DecodeError::StructSize(300)));
    }

    /// Copied from the real distcc 3.4 client while it waited for a compile
    /// (protocol-fixtures/README.md says how).
    #[test]
    #[cfg(all(target_pointer_width = "64", target_endian = "little"))]
    fn the_real_distccs_file_decodes_and_re_encodes_byte_for_byte() {
        let real: &[u8] =
            include_bytes!("../../protocol-fixtures/binstate-distcc-3.4-compile.state.bin");
        let state = decode(real).unwrap();
        assert_eq!(
            state,
            TaskState {
                pid: 13996,
                file: "hello.c".into(),
                host: "127.0.0.9".into(),
                slot: 0,
                phase: Phase::Compile,
            }
        );
        assert_eq!(&encode(&state)[..], real);
    }

    #[test]
    fn file_names() {
        assert_eq!(file_name(77, None), "binstate_77");
        assert_eq!(file_name(77, Some(2)), "binstate_77_2");
        assert!(file_name(77, Some(2)).starts_with(PREFIX));
    }
}
