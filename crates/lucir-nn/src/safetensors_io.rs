//! Models in the safetensors format with PyTorch's tensor names, so that a trained model can be
//! loaded into a PyTorch module and a PyTorch model can start a run (docs/design.md §8).
//!
//! Names follow the LUCIR authors' CIFAR ResNets and torchvision's ResNet-18:
//!
//! | ours | PyTorch |
//! |---|---|
//! | `stem.weight`, `stem_bn.gamma`/`beta` | `conv1.weight`, `bn1.weight`/`bias` |
//! | `block{i}.conv1.weight`, `block{i}.bn2.running_var` | `layer{s}.{j}.conv1.weight`, `layer{s}.{j}.bn2.running_var` |
//! | `block{i}.shortcut.conv.weight`, `block{i}.shortcut.bn.*` | `layer{s}.{j}.downsample.0.weight`, `layer{s}.{j}.downsample.1.*` |
//! | `head.weight`, `head.sigma`, `head.bias` | `fc.weight`, `fc.sigma`, `fc.bias` |
//! | `head.old`, `head.new` (split cosine head) | `fc.fc1.weight`, `fc.fc2.weight` |
//!
//! where block `i` is block `j = i mod n` of stage `s = i / n + 1` (`n` blocks per stage) and a
//! leading `backbone.` is dropped. PyTorch's `num_batches_tracked` counters are not kept (the
//! batch-norm momentum is fixed, so PyTorch never reads them); the importer ignores them.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use lucir_tensor::{Float, Tensor};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::{write_atomic, Error, Module, Result};

/// PyTorch's name for the tensor we call `name`, in a ResNet with `blocks_per_stage` blocks per
/// stage (see the module table).
pub fn torch_name(name: &str, blocks_per_stage: usize) -> String {
    let name = name.strip_prefix("backbone.").unwrap_or(name);
    let n = blocks_per_stage.max(1);
    let mut out: Vec<String> = Vec::new();
    let mut parts = name.split('.').peekable();
    while let Some(part) = parts.next() {
        let last = parts.peek().is_none();
        match part {
            "stem" => out.push("conv1".into()),
            "stem_bn" => out.push("bn1".into()),
            "shortcut" => match parts.next() {
                Some("conv") => out.push("downsample.0".into()),
                Some("bn") => out.push("downsample.1".into()),
                Some(other) => out.push(format!("shortcut.{other}")),
                None => out.push("shortcut".into()),
            },
            "head" if out.is_empty() => out.push("fc".into()),
            "old" if last && out == ["fc"] => out.push("fc1.weight".into()),
            "new" if last && out == ["fc"] => out.push("fc2.weight".into()),
            "gamma" if last => out.push("weight".into()),
            "beta" if last => out.push("bias".into()),
            p => match p
                .strip_prefix("block")
                .and_then(|i| i.parse::<usize>().ok())
            {
                Some(i) if out.is_empty() => out.push(format!("layer{}.{}", i / n + 1, i % n)),
                _ => out.push(p.into()),
            },
        }
    }
    out.join(".")
}

/// The tensors of a safetensors file, by name, as f64 values with their shapes, and the file's
/// metadata. Float tensors may be F64, F32, F16 or BF16; integer tensors (indices, labels,
/// PyTorch's `num_batches_tracked`) are read as exact f64 values.
#[derive(Clone, Debug, Default)]
pub struct TensorFile {
    /// Tensors by name.
    pub tensors: BTreeMap<String, (Vec<usize>, Vec<f64>)>,
    /// The `__metadata__` strings.
    pub metadata: HashMap<String, String>,
}

impl TensorFile {
    /// Reads the file at `path`.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&bytes, path)
    }

    /// Parses the bytes of a safetensors file; `path` names it in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        let bad = |detail: String| Error::State {
            path: path.to_path_buf(),
            detail,
        };
        check_layout(bytes).map_err(|e| bad(format!("not a readable safetensors file ({e})")))?;
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| bad(format!("not a readable safetensors file ({e})")))?;
        let (_, meta) = SafeTensors::read_metadata(bytes)
            .map_err(|e| bad(format!("not a readable safetensors file ({e})")))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.iter() {
            let values = decode(&view).ok_or_else(|| {
                bad(format!(
                    "tensor {name} has dtype {:?}; a float or integer type expected",
                    view.dtype()
                ))
            })?;
            tensors.insert(name.to_string(), (view.shape().to_vec(), values));
        }
        Ok(Self {
            tensors,
            metadata: meta.metadata().clone().unwrap_or_default(),
        })
    }

    /// The tensor `name` as a `Tensor<T>`, or an error naming it.
    pub fn tensor<T: Float>(&self, name: &str, path: &Path) -> Result<Tensor<T>> {
        let bad = |detail: String| Error::State {
            path: path.to_path_buf(),
            detail,
        };
        let (shape, values) = self
            .tensors
            .get(name)
            .ok_or_else(|| bad(format!("tensor {name} is missing")))?;
        Tensor::from_vec(shape, values.iter().map(|v| T::of(*v)).collect())
            .map_err(|e| bad(format!("tensor {name}: {e}")))
    }
}

/// One tensor's entry in a safetensors header.
#[derive(serde::Deserialize)]
struct HeaderEntry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

/// Checks the sizes a safetensors file states against the bytes it has, before the
/// `safetensors` crate reads it: the header length, and each tensor's data offsets and element
/// count (shape product times element size, overflow-checked). A file that states more than it
/// holds is refused here with the tensor and the numbers named (the crate's own errors name
/// neither). Anything else is left to the crate's validation.
fn check_layout(bytes: &[u8]) -> std::result::Result<(), String> {
    let Some((len, rest)) = bytes.split_first_chunk::<8>() else {
        return Err(format!(
            "{} bytes, shorter than the 8-byte header length",
            bytes.len()
        ));
    };
    let len = u64::from_le_bytes(*len);
    let header = usize::try_from(len)
        .ok()
        .and_then(|n| rest.get(..n))
        .ok_or_else(|| {
            format!(
                "the header length is {len} bytes, but only {} bytes follow it",
                rest.len()
            )
        })?;
    let data = (rest.len() - header.len()) as u64;
    let Ok(entries) =
        serde_json::from_slice::<BTreeMap<String, serde_json::Value>>(header.trim_ascii_end())
    else {
        return Ok(());
    };
    for (name, value) in entries {
        if name == "__metadata__" {
            continue;
        }
        let Ok(e) = serde_json::from_value::<HeaderEntry>(value) else {
            continue;
        };
        let (start, end) = e.data_offsets;
        if start > end || end > data {
            return Err(format!(
                "tensor {name} has data offsets {start}..{end}, outside the {data} data bytes"
            ));
        }
        let elements = e
            .shape
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d))
            .ok_or_else(|| format!("tensor {name} has shape {:?}: too many elements", e.shape))?;
        let size = match e.dtype.as_str() {
            "F64" | "I64" | "U64" => 8,
            "F32" | "I32" | "U32" => 4,
            "F16" | "BF16" | "I16" | "U16" => 2,
            "U8" | "I8" | "BOOL" => 1,
            _ => continue,
        };
        if elements.checked_mul(size) != Some(end - start) {
            return Err(format!(
                "tensor {name} of shape {:?} and dtype {} needs {elements} × {size} bytes, its \
                 data offsets span {}",
                e.shape,
                e.dtype,
                end - start
            ));
        }
    }
    Ok(())
}

fn decode(view: &TensorView<'_>) -> Option<Vec<f64>> {
    let data = view.data();
    Some(match view.dtype() {
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
            .collect(),
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap_or([0; 4])) as f64)
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f64())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f64())
            .collect(),
        Dtype::I64 => data
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f64)
            .collect(),
        Dtype::I32 => data
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes(b.try_into().unwrap_or([0; 4])) as f64)
            .collect(),
        Dtype::U8 => data.iter().map(|&b| b as f64).collect(),
        _ => return None,
    })
}

/// Writes the parameters and buffers of `module` to `path` (atomically), under PyTorch's names
/// for a ResNet with `blocks_per_stage` blocks per stage, in the module's precision, with
/// `metadata` as the file's `__metadata__`.
pub fn save_safetensors<T: Float, M: Module<T>>(
    module: &M,
    blocks_per_stage: usize,
    metadata: HashMap<String, String>,
    path: &Path,
) -> Result<()> {
    let bad = |detail: String| Error::State {
        path: path.to_path_buf(),
        detail,
    };
    let params = module.params().into_iter().map(|(n, p)| (n, &p.value));
    let mut entries: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, t) in params.chain(module.buffers()) {
        let t = t.host()?;
        let bytes: Vec<u8> = if T::NAME == "f32" {
            t.as_slice()
                .iter()
                .flat_map(|v| (v.as_f64() as f32).to_le_bytes())
                .collect()
        } else {
            t.as_slice()
                .iter()
                .flat_map(|v| v.as_f64().to_le_bytes())
                .collect()
        };
        entries.push((
            torch_name(&name, blocks_per_stage),
            t.shape().to_vec(),
            bytes,
        ));
    }
    let dtype = if T::NAME == "f32" {
        Dtype::F32
    } else {
        Dtype::F64
    };
    let mut views = Vec::with_capacity(entries.len());
    for (name, shape, bytes) in &entries {
        let view = TensorView::new(dtype, shape.clone(), bytes)
            .map_err(|e| bad(format!("tensor {name}: {e}")))?;
        views.push((name.as_str(), view));
    }
    let mut bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| bad(format!("cannot encode safetensors: {e}")))?;
    sort_header(&mut bytes).map_err(bad)?;
    write_atomic(path, &bytes)
}

/// Rewrites the JSON header of encoded safetensors `bytes` with its keys (the metadata's among
/// them) in sorted order, so that equal contents give equal files: the metadata arrives as a
/// hash map, which the encoder writes in the map's own (per-map random) order. The header's
/// length cannot change (the same keys and values, reordered, in the same compact JSON); the
/// tensors' data offsets stay valid (they do not depend on the header).
fn sort_header(bytes: &mut [u8]) -> std::result::Result<(), String> {
    let broken = |what: &str| format!("encoded safetensors header: {what}");
    let len = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .ok_or_else(|| broken("too short"))?;
    let header = usize::try_from(len)
        .ok()
        .and_then(|len| bytes.get_mut(8..8 + len))
        .ok_or_else(|| broken("length past the end"))?;
    let text = std::str::from_utf8(header).map_err(|_| broken("not UTF-8"))?;
    let text = text.trim_end_matches(' ');
    // Top-level keys sort through the map; the objects under them (the metadata, each
    // tensor's entry) are rebuilt through one too, whatever order `serde_json` keeps.
    let mut sorted: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|e| broken(&e.to_string()))?;
    for value in sorted.values_mut() {
        if let serde_json::Value::Object(map) = value {
            *value = serde_json::to_value(map.iter().collect::<BTreeMap<_, _>>())
                .map_err(|e| broken(&e.to_string()))?;
        }
    }
    let out = serde_json::to_string(&sorted).map_err(|e| broken(&e.to_string()))?;
    if out.len() != text.len() {
        return Err(broken("reordering changed its length"));
    }
    header[..out.len()].copy_from_slice(out.as_bytes());
    Ok(())
}

/// Loads the safetensors file at `path` into `module` (a ResNet with `blocks_per_stage` blocks
/// per stage, or a network holding one), converting to the module's precision, and returns the
/// file's metadata. Every tensor of the module must be in the file with its shape, and the file
/// may hold nothing else (but `num_batches_tracked`); otherwise the error names the tensor and
/// nothing is changed.
pub fn load_safetensors<T: Float, M: Module<T>>(
    module: &mut M,
    blocks_per_stage: usize,
    path: &Path,
) -> Result<HashMap<String, String>> {
    let file = TensorFile::read(path)?;
    apply_tensor_file(module, blocks_per_stage, &file, path)?;
    Ok(file.metadata)
}

/// Copies the tensors of an already read `file` into `module` (see [`load_safetensors`]).
pub fn apply_tensor_file<T: Float, M: Module<T>>(
    module: &mut M,
    blocks_per_stage: usize,
    file: &TensorFile,
    path: &Path,
) -> Result<()> {
    let bad = |detail: String| Error::State {
        path: path.to_path_buf(),
        detail,
    };
    let wanted: Vec<(String, Vec<usize>)> = module
        .shapes()
        .into_iter()
        .map(|(n, s)| (torch_name(&n, blocks_per_stage), s))
        .collect();
    let mut loaded = Vec::with_capacity(wanted.len());
    for (name, shape) in &wanted {
        let mut t = file.tensor::<T>(name, path)?;
        // A one-element tensor may come as a scalar (σ of `torch.tensor(1.0)`) or as shape [1].
        if t.len() == 1 && t.ndim() <= 1 && shape.len() <= 1 && shape.iter().product::<usize>() == 1
        {
            t = t.reshape(shape)?;
        }
        if t.shape() != shape.as_slice() {
            return Err(bad(format!(
                "tensor {name} has shape {:?}, the model expects {shape:?}",
                t.shape()
            )));
        }
        loaded.push(t);
    }
    if let Some(extra) = file
        .tensors
        .keys()
        .filter(|k| !k.ends_with("num_batches_tracked"))
        .find(|k| !wanted.iter().any(|(n, _)| n == *k))
    {
        return Err(bad(format!(
            "tensor {extra} is not part of the model (expected {} tensors: {}, …)",
            wanted.len(),
            wanted
                .iter()
                .take(3)
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    module.assign(loaded);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{load_safetensors, save_safetensors, torch_name, TensorFile};
    use crate::{Module, ResNet};
    use std::collections::HashMap;

    /// Export then import reproduces every parameter and buffer bit for bit, for a CIFAR
    /// ResNet and ResNet-18, under PyTorch's names, with the metadata.
    #[test]
    fn resnets_round_trip_bit_exactly() {
        let dir = std::env::temp_dir().join(format!("lucir-st-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, net, fresh) in [
            (
                "resnet20",
                ResNet::<f32>::cifar(3, 1, 5).unwrap(),
                ResNet::<f32>::cifar(3, 1, 6).unwrap(),
            ),
            (
                "resnet18",
                ResNet::<f32>::resnet18(3, 5).unwrap(),
                ResNet::<f32>::resnet18(3, 6).unwrap(),
            ),
        ] {
            let path = dir.join(format!("{name}.safetensors"));
            let n = net.blocks_per_stage();
            let meta = HashMap::from([("lucir.arch".to_string(), name.to_string())]);
            save_safetensors(&net, n, meta, &path).unwrap();
            let file = TensorFile::read(&path).unwrap();
            assert!(file
                .tensors
                .contains_key("layer2.0.downsample.1.running_var"));
            assert!(file.tensors.contains_key("bn1.weight"));
            let mut back = fresh;
            assert_ne!(back.params()[0].1.value, net.params()[0].1.value);
            let meta = load_safetensors(&mut back, n, &path).unwrap();
            assert_eq!(meta["lucir.arch"], name);
            for ((a, pa), (_, pb)) in net.params().iter().zip(back.params()) {
                assert_eq!(pa.value, pb.value, "{name} {a}");
            }
            for ((a, ta), (_, tb)) in net.buffers().iter().zip(back.buffers()) {
                assert_eq!(*ta, tb, "{name} {a}");
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The same model and metadata give the same bytes: the metadata (a hash map, whose
    /// iteration order differs between maps) is written in key order.
    #[test]
    fn files_are_byte_reproducible() {
        let dir = std::env::temp_dir().join(format!("lucir-st-rep-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let net = ResNet::<f32>::cifar(1, 1, 3).unwrap();
        let meta = || -> HashMap<String, String> {
            (0..12)
                .map(|i| (format!("lucir.key{i}"), format!("value {i}")))
                .collect()
        };
        let files: Vec<Vec<u8>> = (0..4)
            .map(|i| {
                let path = dir.join(format!("m{i}.safetensors"));
                save_safetensors(&net, 1, meta(), &path).unwrap();
                std::fs::read(&path).unwrap()
            })
            .collect();
        for f in &files[1..] {
            assert!(f == &files[0], "two saves of the same model differ");
        }
        let mut back = ResNet::<f32>::cifar(1, 1, 4).unwrap();
        let read = load_safetensors(&mut back, 1, &dir.join("m0.safetensors")).unwrap();
        assert_eq!(read, meta());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn names_follow_pytorch_resnets() {
        let cases = [
            ("backbone.stem.weight", 3, "conv1.weight"),
            ("stem_bn.gamma", 3, "bn1.weight"),
            ("backbone.stem_bn.running_var", 5, "bn1.running_var"),
            ("backbone.block0.conv1.weight", 3, "layer1.0.conv1.weight"),
            ("backbone.block4.bn2.beta", 3, "layer2.1.bn2.bias"),
            (
                "backbone.block3.shortcut.conv.weight",
                3,
                "layer2.0.downsample.0.weight",
            ),
            (
                "backbone.block6.shortcut.bn.running_mean",
                3,
                "layer3.0.downsample.1.running_mean",
            ),
            ("backbone.block7.bn1.gamma", 2, "layer4.1.bn1.weight"),
            ("head.weight", 3, "fc.weight"),
            ("head.sigma", 3, "fc.sigma"),
            ("head.old", 3, "fc.fc1.weight"),
            ("head.new", 3, "fc.fc2.weight"),
            ("head.bias", 3, "fc.bias"),
        ];
        for (ours, n, torch) in cases {
            assert_eq!(torch_name(ours, n), torch, "{ours}");
        }
    }
}
