//! The checkpoint reader on arbitrary and mangled bytes: it returns the checkpoint or an error
//! naming the file, never panics, and never allocates more at once than a fixed multiple of the
//! bytes it is given (measured). Mangled files almost never keep their SHA-256, so the decoder
//! behind the checksum is fuzzed too: a valid payload is mangled and its digest recomputed.
//! CI runs 2 000 cases per property;
//! `LUCIR_FUZZ_CASES=1000000 cargo test --release -p lucir-driver --test fuzz_checkpoint` is the
//! long run recorded in docs/reliability.md.

#[path = "../../lucir-nn/tests/common/fuzz.rs"]
mod fuzz;

use std::path::Path;
use std::sync::OnceLock;

use fuzz::{allocation_within_bound, cases, edits, largest_allocation, mangle, HUGE_VARINT};
use lucir_data::{ExemplarMemory, MemoryBudget};
use lucir_driver::checkpoint::{decode, encode, Machine};
use lucir_method::{LearnerState, LossTerms, MidEpoch, PhaseResult};
use lucir_nn::{BatchNorm2d, StateDict};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

const PATH: &str = "fuzz.ckpt";

/// A small learner state with every field filled: networks, momentum, exemplars, class means,
/// history and a phase result.
fn state() -> LearnerState {
    let net = StateDict::of(&BatchNorm2d::<f32>::new(2)).unwrap();
    let mut memory = ExemplarMemory::new(MemoryBudget::PerClass(2));
    memory.set(0, vec![4, 9]);
    memory.set(1, vec![7]);
    LearnerState {
        training: Some((1, 2)),
        lambda: 5.0,
        prev: Some(net.clone()),
        net,
        velocity: vec![("gamma".into(), vec![0.5, -0.25])],
        memory,
        class_means: vec![0.1, 0.2, 0.3, 0.4],
        history: vec![vec![90.0, 80.0]],
        results: vec![PhaseResult {
            phase: 0,
            classes_seen: 2,
            acc_cnn: 85.0,
            acc_nme: 86.0,
            acc_old_cnn: None,
            acc_new_cnn: 85.0,
            acc_old_nme: None,
            acc_new_nme: 86.0,
            forgetting_cnn: 0.0,
            lambda: 5.0,
            sigma: Some(10.0),
            train_seconds: 1.5,
            images_per_s: 100.0,
        }],
        mid_epoch: Some(MidEpoch {
            steps: 3,
            sum: LossTerms {
                total: 4.0,
                ce: 2.5,
                lf: 1.0,
                mr: 0.5,
                kd: 0.0,
            },
            images: 48,
            seconds: 0.75,
        }),
    }
}

/// The bytes of a valid checkpoint of [`state`].
fn valid_file() -> &'static [u8] {
    static FILE: OnceLock<Vec<u8>> = OnceLock::new();
    FILE.get_or_init(|| encode(&state(), &Machine::current("cpu"), 12.5).unwrap())
}

/// `payload` followed by its SHA-256: a file whose checksum holds.
fn with_digest(mut payload: Vec<u8>) -> Vec<u8> {
    let digest = Sha256::digest(&payload);
    payload.extend_from_slice(&digest);
    payload
}

/// Decodes `bytes`, checking the allocation bound; the error (if any) names the file.
fn read(bytes: &[u8]) -> Result<(), String> {
    let (r, largest) = largest_allocation(|| decode(bytes, Path::new(PATH)));
    assert!(
        allocation_within_bound(bytes.len(), largest),
        "{largest} bytes allocated at once to decode {} bytes",
        bytes.len()
    );
    match r {
        Ok(_) => Ok(()),
        Err(e) => {
            let e = format!("{e:#}");
            assert!(e.starts_with(PATH), "{e}");
            Err(e)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn reader_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = read(&bytes);
        let _ = read(&with_digest(bytes));
    }

    /// Mangled files: the checksum refuses them (but for an edit that changes nothing).
    #[test]
    fn reader_never_panics_on_mangled_files(edits in edits()) {
        let bytes = mangle(valid_file().to_vec(), &edits);
        if let Err(e) = read(&bytes) {
            prop_assert!(e.contains("checksum mismatch") || e.contains("truncated"), "{}", e);
        }
    }

    /// Mangled payloads with a recomputed digest: every case reaches postcard's decoding.
    #[test]
    fn decoder_never_panics_on_mangled_payloads(edits in edits()) {
        let file = valid_file();
        let payload = file[..file.len() - 32].to_vec();
        if let Err(e) = read(&with_digest(mangle(payload, &edits))) {
            prop_assert!(!e.contains("checksum mismatch"), "{}", e);
        }
    }
}

#[test]
fn a_valid_file_decodes_to_its_state() {
    let c = decode(valid_file(), Path::new(PATH)).unwrap();
    assert_eq!(c.state, state());
    assert_eq!(c.wall_seconds, 12.5);
}

/// Lengths stated as huge varints (with a digest that holds) are errors after reading what is
/// there, not allocations of that size (bounded in `read`).
#[test]
fn checkpoints_stating_huge_lengths_are_errors() {
    let file = valid_file();
    let payload = &file[..file.len() - 32];
    // The format name's length is the first byte; every later one-byte varint is tried too.
    let mut tried = 0;
    for at in 0..payload.len() {
        if payload[at] >= 0x80 {
            continue;
        }
        let mut p = payload.to_vec();
        p.splice(at..at + 1, HUGE_VARINT);
        if let Err(e) = read(&with_digest(p)) {
            assert!(
                e.contains("unreadable checkpoint") || e.contains("not a version-2"),
                "{at}: {e}"
            );
        }
        tried += 1;
    }
    assert!(tried > 50, "{tried}");
    let e = read(&with_digest([&HUGE_VARINT[..], b"lucir"].concat())).unwrap_err();
    assert!(e.contains("unreadable checkpoint"), "{e}");
}

#[test]
fn short_and_damaged_files_are_named() {
    let e = read(&[0; 31]).unwrap_err();
    assert_eq!(e, "fuzz.ckpt: truncated checkpoint (31 bytes)");
    let mut bytes = valid_file().to_vec();
    bytes[3] ^= 1;
    let e = read(&bytes).unwrap_err();
    assert!(e.contains("checksum mismatch"), "{e}");
}
