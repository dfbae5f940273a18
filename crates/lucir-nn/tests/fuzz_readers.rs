//! The state-file and safetensors readers on arbitrary and mangled bytes: each returns a value
//! or an error naming the file, never panics, and never allocates more at once than a fixed
//! multiple of the bytes it is given (measured). Files that state huge lengths or shapes are
//! refused with a clear error. CI runs 2 000 cases per property;
//! `LUCIR_FUZZ_CASES=1000000 cargo test --release -p lucir-nn --test fuzz_readers` is the long
//! run recorded in docs/reliability.md.

#[path = "common/fuzz.rs"]
mod fuzz;

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use fuzz::{allocation_within_bound, cases, edits, largest_allocation, mangle, HUGE_VARINT};
use lucir_nn::{
    apply_tensor_file, save_safetensors, save_state, BatchNorm2d, StateData, StateDict, StateEntry,
    TensorFile, STATE_FORMAT, STATE_VERSION,
};
use proptest::prelude::*;
use serde_json::json;

const PATH: &str = "fuzz.file";

/// A valid state file and a valid safetensors file of a 3-channel batch norm.
fn valid_files() -> &'static (Vec<u8>, Vec<u8>) {
    static FILES: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    FILES.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("lucir-nn-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bn = BatchNorm2d::<f32>::new(3);
        let (state, st) = (dir.join("bn.state"), dir.join("bn.safetensors"));
        save_state(&bn, &state).unwrap();
        let meta = HashMap::from([("lucir.arch".to_string(), "bn".to_string())]);
        save_safetensors(&bn, 1, meta, &st).unwrap();
        let files = (std::fs::read(&state).unwrap(), std::fs::read(&st).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
        files
    })
}

/// Decodes `bytes` as a state file and applies it to an f32 module (and to an f64 one, which
/// must fail or succeed with an error naming the file); the error, if any.
fn read_state(bytes: &[u8]) -> Result<(), String> {
    let path = Path::new(PATH);
    let (dict, largest) = largest_allocation(|| StateDict::from_bytes(bytes, path));
    assert!(
        allocation_within_bound(bytes.len(), largest),
        "{largest} bytes allocated at once to decode {} bytes",
        bytes.len()
    );
    let dict = dict.map_err(|e| e.to_string())?;
    let r64 = dict.apply(&mut BatchNorm2d::<f64>::new(3), path);
    assert_names_file(&r64.map_err(|e| e.to_string()));
    dict.apply(&mut BatchNorm2d::<f32>::new(3), path)
        .map_err(|e| e.to_string())
}

/// Parses `bytes` as a safetensors file and loads it into a batch norm; checks that each
/// tensor read has as many values as its shape says.
fn read_safetensors(bytes: &[u8]) -> Result<(), String> {
    let path = Path::new(PATH);
    let (file, largest) = largest_allocation(|| TensorFile::parse(bytes, path));
    assert!(
        allocation_within_bound(bytes.len(), largest),
        "{largest} bytes allocated at once to parse {} bytes",
        bytes.len()
    );
    let file = file.map_err(|e| e.to_string())?;
    for (name, (shape, values)) in &file.tensors {
        assert_eq!(shape.iter().product::<usize>(), values.len(), "{name}");
    }
    apply_tensor_file(&mut BatchNorm2d::<f32>::new(3), 1, &file, path).map_err(|e| e.to_string())
}

/// Every error names the file.
fn assert_names_file(r: &Result<(), String>) {
    if let Err(e) = r {
        assert!(e.starts_with(PATH), "{e}");
    }
}

const NAMES: [&str; 6] = [
    "weight",
    "bias",
    "running_mean",
    "running_var",
    "num_batches_tracked",
    "fc.weight",
];
const DTYPES: [(&str, u64); 11] = [
    ("F32", 4),
    ("F64", 8),
    ("F16", 2),
    ("BF16", 2),
    ("I64", 8),
    ("I32", 4),
    ("U8", 1),
    ("BOOL", 1),
    ("F8_E4M3", 1),
    ("U16", 2),
    ("Q4", 1),
];

/// A tensor's dimension: mostly small, sometimes any size.
fn dim() -> impl Strategy<Value = u64> {
    prop_oneof![4 => 0u64..6, 1 => any::<u64>()]
}

/// A generated header entry: indices into [`NAMES`] and [`DTYPES`], the shape, and the data
/// offsets (`None`: right after the previous tensor's, as long as the shape says).
type Entry = (usize, usize, Vec<u64>, Option<(u64, u64)>);

/// A safetensors file built from generated header entries, so that the layout checks run:
/// names, dtypes, shapes and offsets of any size, and data bytes cut or padded to the stated
/// end when `fit`.
fn safetensors_file(entries: &[Entry], data: &[u8], fit: bool) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), json!({ "lucir.arch": "bn" }));
    let mut end = 0u64;
    for (name, dtype, shape, offsets) in entries {
        let (dtype, size) = DTYPES[dtype % DTYPES.len()];
        let bytes = shape
            .iter()
            .try_fold(size, |n, &d| n.checked_mul(d))
            .unwrap_or(u64::MAX);
        let (s, e) = offsets.unwrap_or((end, end.saturating_add(bytes)));
        end = e;
        header.insert(
            NAMES[name % NAMES.len()].into(),
            json!({ "dtype": dtype, "shape": shape, "data_offsets": [s, e] }),
        );
    }
    let text = serde_json::to_string(&header).unwrap();
    let mut file = (text.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(text.as_bytes());
    let mut data = data.to_vec();
    if fit && end <= 4096 {
        data.resize(end as usize, 0x3c);
    }
    file.extend_from_slice(&data);
    file
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn readers_never_panic_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        assert_names_file(&read_state(&bytes));
        assert_names_file(&read_safetensors(&bytes));
    }

    /// Valid files with a few edits, so that the decoders run deep (a state file has no
    /// checksum: almost every edit reaches postcard's decoding).
    #[test]
    fn readers_never_panic_on_mangled_valid_files(edits in edits()) {
        let (state, st) = valid_files();
        assert_names_file(&read_state(&mangle(state.clone(), &edits)));
        assert_names_file(&read_safetensors(&mangle(st.clone(), &edits)));
    }

    /// Safetensors headers with any dtypes, shapes and offsets, huge ones among them.
    #[test]
    fn safetensors_reader_never_panics_on_stated_sizes(
        entries in prop::collection::vec(
            (0usize..6, 0usize..11, prop::collection::vec(dim(), 0..4),
             prop::option::weighted(0.2, (any::<u64>(), any::<u64>()))),
            0..5,
        ),
        data in prop::collection::vec(any::<u8>(), 0..64),
        fit in any::<bool>(),
    ) {
        assert_names_file(&read_safetensors(&safetensors_file(&entries, &data, fit)));
    }
}

#[test]
fn valid_files_load() {
    let (state, st) = valid_files();
    assert_eq!(read_state(state), Ok(()));
    assert_eq!(read_safetensors(st), Ok(()));
    let built = safetensors_file(
        &[
            (0, 0, vec![3], None),
            (1, 0, vec![3], None),
            (2, 0, vec![3], None),
            (3, 0, vec![3], None),
        ],
        &[],
        true,
    );
    assert_eq!(read_safetensors(&built), Ok(()));
}

/// The header length is a u64 at the start; u64::MAX is refused before anything is read.
#[test]
fn a_safetensors_header_length_past_the_file_is_an_error() {
    let mut bytes = u64::MAX.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    let e = read_safetensors(&bytes).unwrap_err();
    assert!(
        e.contains("header length is 18446744073709551615 bytes, but only 2 bytes follow it"),
        "{e}"
    );
}

/// Shapes whose element count overflows or exceeds the data, and data offsets up to u64::MAX,
/// are refused with the tensor and the numbers named.
#[test]
fn safetensors_shapes_beyond_the_data_are_errors() {
    let huge = 1u64 << 32;
    let cases: [(Vec<u64>, (u64, u64), &str); 4] = [
        (
            vec![huge, huge, 2],
            (0, 0),
            "tensor weight has shape [4294967296, 4294967296, 2]: too many elements",
        ),
        (
            vec![1_000_000],
            (0, 4_000_000),
            "tensor weight has data offsets 0..4000000, outside the 8 data bytes",
        ),
        (
            vec![1000],
            (0, 8),
            "tensor weight of shape [1000] and dtype F32 needs 1000 × 4 bytes, its data offsets \
             span 8",
        ),
        (
            vec![u64::MAX / 4],
            (0, u64::MAX),
            "outside the 8 data bytes",
        ),
    ];
    for (shape, offsets, want) in cases {
        let file = safetensors_file(&[(0, 0, shape, Some(offsets))], &[0; 8], false);
        let e = read_safetensors(&file).unwrap_err();
        assert!(e.contains(want), "{e}");
    }
}

/// A state file whose entry count, name length or data length is a huge varint ends in an
/// error after reading what is there (the bound on allocations is checked by `read_state`).
#[test]
fn state_files_stating_huge_lengths_are_errors() {
    let dict = StateDict {
        format: STATE_FORMAT.into(),
        version: STATE_VERSION,
        entries: vec![StateEntry {
            name: "gamma".into(),
            shape: vec![3],
            data: StateData::F32(vec![1.0; 3]),
        }],
    };
    let bytes = postcard::to_stdvec(&dict).unwrap();
    // Format (1 + 11 bytes), version (1), entry count (1), name length (1) + "gamma",
    // shape length (1) + 3, data variant (1), data length (1), data: the lengths are at bytes
    // 13, 14, 20 and 23.
    for at in [13, 14, 20, 23] {
        let mut b = bytes.clone();
        b.splice(at..at + 1, HUGE_VARINT);
        let e = read_state(&b).unwrap_err();
        assert!(e.contains("not a readable lucir state file"), "{at}: {e}");
    }
}

/// An entry whose shape's element count overflows (or differs from its data) is refused.
#[test]
fn state_entries_must_fit_their_shapes() {
    for (shape, want) in [
        (vec![usize::MAX, 2], "needs more elements, the file has 3"),
        (vec![4], "needs 4 elements, the file has 3"),
    ] {
        let dict = StateDict {
            format: STATE_FORMAT.into(),
            version: STATE_VERSION,
            entries: vec![StateEntry {
                name: "gamma".into(),
                shape,
                data: StateData::F32(vec![1.0; 3]),
            }],
        };
        let e = read_state(&postcard::to_stdvec(&dict).unwrap()).unwrap_err();
        assert!(
            e.contains("entry gamma of shape") && e.contains(want),
            "{e}"
        );
    }
}

/// The allocation bound above is measured, not assumed: the probe sees a large request.
#[test]
fn the_allocation_probe_sees_a_large_request() {
    let (v, largest) = largest_allocation(|| vec![0u8; 1 << 20]);
    assert_eq!(v.len(), 1 << 20);
    assert!(largest >= 1 << 20, "{largest}");
    assert!(!allocation_within_bound(1000, largest));
}
