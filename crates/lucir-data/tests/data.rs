//! Dataset readers on small files written byte by byte, their error messages, arbitrary bytes,
//! the real Fashion-MNIST when present, class order, phases, augmentation and the loader.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lucir_data::{
    decode_image, gunzip_if_needed, load, numpy_shuffle, parse_cifar, parse_idx_images,
    parse_idx_labels, Augment, CifarKind, ClassOrder, DatasetKind, ExemplarMemory, FolderOptions,
    Loader, MemoryBudget, Normalization, Phases, Sample, Split, FMNIST_DEFAULT_DIR,
};
use proptest::prelude::*;

/// A fresh empty folder under the system temp dir.
fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lucir-data-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn idx_images(n: u32, h: u32, w: u32, pixels: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, 3];
    for d in [n, h, w] {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(pixels);
    b
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, 1];
    b.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    b.extend_from_slice(labels);
    b
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Writes a tiny 10-class IDX dataset: `per_class` train and 1 test image per class, 4×5 pixels.
/// Pixel value = image index (mod 256), label = index mod 10. Train files gzipped, test raw.
fn write_idx_dataset(dir: &Path, per_class: usize) {
    let n = 10 * per_class;
    let px: Vec<u8> = (0..n)
        .flat_map(|i| std::iter::repeat_n(i as u8, 20))
        .collect();
    let lb: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    std::fs::write(
        dir.join("train-images-idx3-ubyte.gz"),
        gz(&idx_images(n as u32, 4, 5, &px)),
    )
    .unwrap();
    std::fs::write(dir.join("train-labels-idx1-ubyte.gz"), gz(&idx_labels(&lb))).unwrap();
    let tpx: Vec<u8> = (0..10)
        .flat_map(|i| std::iter::repeat_n(200 + i as u8, 20))
        .collect();
    let tlb: Vec<u8> = (0..10).collect();
    std::fs::write(
        dir.join("t10k-images-idx3-ubyte"),
        idx_images(10, 4, 5, &tpx),
    )
    .unwrap();
    std::fs::write(dir.join("t10k-labels-idx1-ubyte"), idx_labels(&tlb)).unwrap();
}

fn load_err(kind: DatasetKind, dir: &Path) -> String {
    load(kind, Some(dir), FolderOptions::default())
        .unwrap_err()
        .to_string()
}

#[test]
fn idx_reader_reads_gzipped_and_raw_files() {
    let dir = temp_dir("idx-ok");
    write_idx_dataset(&dir, 3);
    let ds = load(DatasetKind::Mnist, Some(&dir), FolderOptions::default()).unwrap();
    assert_eq!(
        (ds.train.len(), ds.test.len(), ds.train.shape),
        (30, 10, [1, 4, 5])
    );
    assert_eq!(ds.train.image(7), Some(&[7u8; 20][..]));
    assert_eq!(ds.train.labels[13], 3);
    assert_eq!(ds.test.image(2), Some(&[202u8; 20][..]));
    assert_eq!(ds.train.class_counts(10), vec![3; 10]);
    let first = ds.train.first_per_class(10, 2);
    assert_eq!(first.labels, (0..20).map(|i| i % 10).collect::<Vec<_>>());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn idx_errors_name_the_file_and_the_fault() {
    let dir = temp_dir("idx-bad");
    // Wrong magic.
    write_idx_dataset(&dir, 2);
    let mut b = idx_images(20, 4, 5, &[0; 400]);
    b[3] = 1;
    std::fs::write(dir.join("train-images-idx3-ubyte.gz"), gz(&b)).unwrap();
    let e = load_err(DatasetKind::Fmnist, &dir);
    assert!(
        e.contains("train-images-idx3-ubyte.gz") && e.contains("wrong magic"),
        "{e}"
    );
    // Truncated pixels.
    std::fs::write(
        dir.join("train-images-idx3-ubyte.gz"),
        gz(&idx_images(20, 4, 5, &[0; 300])),
    )
    .unwrap();
    let e = load_err(DatasetKind::Fmnist, &dir);
    assert!(
        e.contains("train-images-idx3-ubyte.gz")
            && e.contains("expected 400 bytes")
            && e.contains("found 300"),
        "{e}"
    );
    // Image/label count mismatch.
    write_idx_dataset(&dir, 2);
    std::fs::write(dir.join("t10k-labels-idx1-ubyte"), idx_labels(&[0, 1, 2])).unwrap();
    let e = load_err(DatasetKind::Fmnist, &dir);
    assert!(
        e.contains("t10k-labels-idx1-ubyte") && e.contains("3 labels but"),
        "{e}"
    );
    // Label out of range.
    let mut lb: Vec<u8> = (0..10).collect();
    lb[4] = 12;
    std::fs::write(dir.join("t10k-labels-idx1-ubyte"), idx_labels(&lb)).unwrap();
    let e = load_err(DatasetKind::Fmnist, &dir);
    assert!(
        e.contains("t10k-labels-idx1-ubyte") && e.contains("label 12"),
        "{e}"
    );
    // Empty class.
    let lb: Vec<u8> = (0..10).map(|i| if i == 7 { 6 } else { i }).collect();
    std::fs::write(dir.join("t10k-labels-idx1-ubyte"), idx_labels(&lb)).unwrap();
    let e = load_err(DatasetKind::Fmnist, &dir);
    assert!(
        e.contains("t10k-labels-idx1-ubyte") && e.contains("class 7 has no image"),
        "{e}"
    );
    // Missing file.
    std::fs::remove_file(dir.join("t10k-labels-idx1-ubyte")).unwrap();
    let e = load_err(DatasetKind::Fmnist, &dir);
    assert!(
        e.contains("t10k-labels-idx1-ubyte") && e.contains("not found"),
        "{e}"
    );
    // Missing folder: says how to install.
    let e = load_err(DatasetKind::Fmnist, &dir.join("nope"));
    assert!(e.contains("apt-get install dataset-fashion-mnist"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn cifar_record(kind: CifarKind, label: u8, fill: u8) -> Vec<u8> {
    let mut r = match kind {
        CifarKind::Cifar10 => vec![label],
        CifarKind::Cifar100 => vec![label / 5, label],
    };
    r.extend(std::iter::repeat_n(fill, 3072));
    r
}

#[test]
fn cifar_readers_read_both_formats() {
    let dir = temp_dir("cifar10");
    for b in 1..=5u8 {
        let recs: Vec<u8> = (0..10u8)
            .flat_map(|l| cifar_record(CifarKind::Cifar10, l, b))
            .collect();
        std::fs::write(dir.join(format!("data_batch_{b}.bin")), recs).unwrap();
    }
    let recs: Vec<u8> = (0..10u8)
        .flat_map(|l| cifar_record(CifarKind::Cifar10, l, 9))
        .collect();
    std::fs::write(dir.join("test_batch.bin"), recs).unwrap();
    let ds = load(DatasetKind::Cifar10, Some(&dir), FolderOptions::default()).unwrap();
    assert_eq!(
        (ds.train.len(), ds.test.len(), ds.train.shape),
        (50, 10, [3, 32, 32])
    );
    assert_eq!(ds.train.labels[13], 3);
    assert_eq!(ds.train.image(13).unwrap()[0], 2);
    assert_eq!(ds.class_names[3], "3", "no meta file: the ids");
    // The archive's batches.meta.txt (ten names, then a blank line) names the classes.
    let names = "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n";
    std::fs::write(dir.join("batches.meta.txt"), names).unwrap();
    let ds = load(DatasetKind::Cifar10, Some(&dir), FolderOptions::default()).unwrap();
    assert_eq!((&*ds.class_names[3], &*ds.class_names[9]), ("cat", "truck"));

    let dir100 = temp_dir("cifar100");
    let recs: Vec<u8> = (0..100u8)
        .flat_map(|l| cifar_record(CifarKind::Cifar100, l, l))
        .collect();
    std::fs::write(dir100.join("train.bin"), &recs).unwrap();
    std::fs::write(dir100.join("test.bin"), &recs).unwrap();
    let ds = load(
        DatasetKind::Cifar100,
        Some(&dir100),
        FolderOptions::default(),
    )
    .unwrap();
    assert_eq!((ds.classes, ds.train.len()), (100, 100));
    assert_eq!(ds.test.labels[42], 42);
    assert_eq!(ds.test.image(42).unwrap()[3071], 42);

    // Truncated record, fine label out of range, coarse label out of range, missing file.
    std::fs::write(dir100.join("test.bin"), &recs[..recs.len() - 10]).unwrap();
    let e = load_err(DatasetKind::Cifar100, &dir100);
    assert!(
        e.contains("test.bin") && e.contains("not a whole number of 3074-byte records"),
        "{e}"
    );
    let mut bad = recs.clone();
    bad[1] = 100;
    std::fs::write(dir100.join("test.bin"), &bad).unwrap();
    let e = load_err(DatasetKind::Cifar100, &dir100);
    assert!(
        e.contains("test.bin") && e.contains("label 100 is outside 0–99"),
        "{e}"
    );
    bad[1] = 0;
    bad[0] = 20;
    std::fs::write(dir100.join("test.bin"), &bad).unwrap();
    let e = load_err(DatasetKind::Cifar100, &dir100);
    assert!(e.contains("coarse label 20"), "{e}");
    std::fs::remove_file(dir.join("data_batch_3.bin")).unwrap();
    let e = load_err(DatasetKind::Cifar10, &dir);
    assert!(
        e.contains("data_batch_3.bin") && e.contains("not found"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&dir100).unwrap();
}

/// Cases per fuzz property: 2 000 in CI; `LUCIR_FUZZ_CASES=100000` for the long run recorded in
/// docs/reliability.md.
fn fuzz_cases() -> u32 {
    std::env::var("LUCIR_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: fuzz_cases(), failure_persistence: None, ..ProptestConfig::default() })]

    /// No byte sequence makes a reader panic: each returns Ok or a descriptive Err.
    #[test]
    fn readers_never_panic_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let p = Path::new("fuzz.bin");
        let _ = parse_idx_images(p, &bytes);
        let _ = parse_idx_labels(p, &bytes);
        let _ = parse_cifar(p, &bytes, CifarKind::Cifar10);
        let _ = parse_cifar(p, &bytes, CifarKind::Cifar100);
        let _ = gunzip_if_needed(p, bytes.clone(), 1 << 20);
        let _ = decode_image(p, &bytes, 8);
    }

    /// The same, for inputs that start like valid files (so the deeper checks run).
    #[test]
    fn readers_never_panic_on_mangled_headers(
        tail in prop::collection::vec(any::<u8>(), 0..64), n in any::<u32>(), h in any::<u32>(),
    ) {
        let p = Path::new("fuzz.bin");
        let mut b = vec![0, 0, 8, 3];
        b.extend_from_slice(&n.to_be_bytes());
        b.extend_from_slice(&h.to_be_bytes());
        b.extend_from_slice(&h.to_be_bytes());
        b.extend_from_slice(&tail);
        let _ = parse_idx_images(p, &b);
        let _ = gunzip_if_needed(p, gz(&b)[..(b.len() / 2).max(2)].to_vec(), 1 << 20);
        let mut l = vec![0, 0, 8, 1];
        l.extend_from_slice(&n.to_be_bytes());
        l.extend_from_slice(&tail);
        let _ = parse_idx_labels(p, &l);
        let mut png = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
        png.extend_from_slice(&tail);
        let _ = decode_image(p, &png, 8);
    }
}

/// On the real Fashion-MNIST: 60000/10000 images, 6000/1000 per class. Under `CI=true` missing
/// files are a failure, not a skip (`.ci/run` installs `dataset-fashion-mnist`).
#[test]
fn real_fashion_mnist_has_the_published_counts() {
    let dir = Path::new(FMNIST_DEFAULT_DIR);
    if !dir.join("train-images-idx3-ubyte.gz").is_file() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "Fashion-MNIST is missing from {FMNIST_DEFAULT_DIR} under CI"
        );
        eprintln!("skipped: Fashion-MNIST not installed in {FMNIST_DEFAULT_DIR}");
        return;
    }
    let ds = load(DatasetKind::Fmnist, None, FolderOptions::default()).unwrap();
    assert_eq!((ds.train.len(), ds.test.len()), (60000, 10000));
    assert_eq!(ds.train.shape, [1, 28, 28]);
    assert_eq!(ds.train.class_counts(10), vec![6000; 10]);
    assert_eq!(ds.test.class_counts(10), vec![1000; 10]);
}

/// numpy's `np.random.seed(1993); np.random.shuffle(arange(n))` reproduced: the Fashion-MNIST
/// order used by the presets and the paper's CIFAR-100 order (docs/design.md §7).
#[test]
fn seeded_class_order_matches_numpy() {
    assert_eq!(numpy_shuffle(10, 1993), vec![4, 2, 7, 6, 0, 3, 5, 8, 9, 1]);
    let cifar100 =
        "68 56 78 8 23 84 90 65 74 76 40 89 3 92 55 9 26 80 43 38 58 70 77 1 85 19 17 50 \
        28 53 13 81 45 82 6 59 83 16 15 44 91 41 72 60 79 52 20 10 31 54 37 95 14 71 96 98 97 2 64 \
        66 42 22 35 86 24 34 87 21 99 0 88 27 18 94 11 12 47 25 30 46 62 69 36 61 7 63 75 5 32 4 \
        51 48 73 93 39 67 29 49 57 33";
    let want: Vec<usize> = cifar100
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(ClassOrder::seeded(100, 1993).order(), &want[..]);
    let o = ClassOrder::seeded(10, 1993);
    assert_eq!((o.position(4), o.position(1)), (0, 9));
}

#[test]
fn class_orders_and_phases_are_validated() {
    assert!(ClassOrder::explicit(3, vec![0, 1])
        .unwrap_err()
        .to_string()
        .contains("lists 2 classes"));
    assert!(ClassOrder::explicit(3, vec![0, 1, 1])
        .unwrap_err()
        .to_string()
        .contains("class 1 twice"));
    assert!(ClassOrder::explicit(3, vec![0, 1, 5])
        .unwrap_err()
        .to_string()
        .contains("class 5"));
    let p = Phases::equal(100, 50, 10).unwrap();
    assert_eq!(p.len(), 6);
    assert_eq!(p.range(2), 60..70);
    assert_eq!(
        Phases::equal(10, 5, 1).unwrap().sizes(),
        &[5, 1, 1, 1, 1, 1]
    );
    assert!(Phases::equal(100, 50, 7)
        .unwrap_err()
        .to_string()
        .contains("do not split"));
    let err = Phases::equal(10, 11, 1);
    assert!(matches!(err, Err(lucir_data::Error::Config(_))), "{err:?}");
    assert!(Phases::explicit(10, vec![5, 4])
        .unwrap_err()
        .to_string()
        .contains("add up to 9"));
    let err = Phases::explicit(10, vec![10, 0]);
    assert!(matches!(err, Err(lucir_data::Error::Config(_))), "{err:?}");
    assert_eq!(Phases::explicit(10, vec![4, 6]).unwrap().range(1), 4..10);
}

fn tiny_split() -> Arc<Split> {
    let n = 50;
    let images: Vec<u8> = (0..n * 28 * 28).map(|i| (i * 7 % 251) as u8).collect();
    Arc::new(Split {
        images: images.into(),
        labels: (0..n).map(|i| i % 5).collect(),
        shape: [1, 28, 28],
    })
}

fn aug() -> Augment {
    Augment {
        crop: 28,
        pad: 4,
        flip: true,
    }
}

/// A training loader over all 50 images of [`tiny_split`] (labels `i mod 5`), batch 16.
fn tiny_train_loader(seed: u64) -> Loader {
    let samples: Vec<Sample> = (0..50)
        .map(|i| Sample {
            id: i,
            label: i % 5,
        })
        .collect();
    Loader::train(
        tiny_split(),
        samples,
        16,
        Normalization::fmnist(),
        aug(),
        seed,
    )
}

/// Augmented batches depend only on (seed, epoch), not on the rayon thread count.
#[test]
fn augmentation_is_deterministic_across_thread_counts() {
    let loader = tiny_train_loader(42);
    let run = |threads: usize| -> Vec<Vec<f32>> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let d = loader.draws(3);
            d.order
                .chunks(16)
                .zip(d.crops.chunks(16))
                .map(|(w, c)| loader.render(w, c).unwrap().images.into_vec())
                .collect()
        })
    };
    assert_eq!(run(1), run(2));
    let e3: Vec<Vec<f32>> = loader
        .epoch(3)
        .map(|b| b.unwrap().images.into_vec())
        .collect();
    assert_eq!(e3, run(2));
    let e4: Vec<f32> = loader.epoch(4).next().unwrap().unwrap().images.into_vec();
    assert_ne!(e3[0], e4, "a new epoch reshuffles and re-augments");
}

/// An epoch's draws are a function of (seed, epoch) alone, differ between seeds and between
/// epochs, and cover every offset and both flips evenly: over 50 samples × 200 epochs, each of
/// the 9 offsets per axis within 12% of its expected count and the flip rate within 0.47–0.53.
#[test]
fn draws_are_keyed_by_seed_and_epoch_and_uniform() {
    let (a, b) = (tiny_train_loader(7), tiny_train_loader(8));
    assert_eq!(a.draws(5), tiny_train_loader(7).draws(5));
    assert_ne!(a.draws(5).order, a.draws(6).order);
    assert_ne!(a.draws(5).order, b.draws(5).order);
    let (mut dy, mut dx, mut flips, mut n) = ([0usize; 9], [0usize; 9], 0usize, 0usize);
    for epoch in 0..200 {
        let d = a.draws(epoch);
        let mut seen = d.order.clone();
        seen.sort();
        assert_eq!(seen, (0..50).collect::<Vec<_>>(), "a permutation");
        for c in d.crops {
            dy[c.dy] += 1;
            dx[c.dx] += 1;
            flips += usize::from(c.flip);
            n += 1;
        }
    }
    let expected = n as f64 / 9.0;
    for count in dy.iter().chain(&dx) {
        assert!(
            (*count as f64 - expected).abs() < 0.12 * expected,
            "{dy:?} {dx:?}"
        );
    }
    let rate = flips as f64 / n as f64;
    assert!((0.47..0.53).contains(&rate), "flip rate {rate}");
    let plain = Loader::train(
        tiny_split(),
        (0..50).map(|i| Sample { id: i, label: 0 }).collect(),
        16,
        Normalization::fmnist(),
        Augment {
            flip: false,
            ..aug()
        },
        7,
    );
    assert!(plain.draws(5).crops.iter().all(|c| !c.flip));
    assert_eq!(
        plain.draws(5).order,
        a.draws(5).order,
        "flip off draws the same stream"
    );
}

/// The test transform of a padded-crop dataset is the image itself, normalised; the mirrored
/// one is its left-right flip.
#[test]
fn test_transform_is_plain_normalisation() {
    let split = tiny_split();
    let norm = Normalization::fmnist();
    let samples = vec![Sample { id: 3, label: 3 }];
    let plain = Loader::test(
        split.clone(),
        samples.clone(),
        8,
        norm.clone(),
        aug(),
        false,
    );
    let b = plain.epoch(0).next().unwrap().unwrap();
    assert_eq!(b.images.shape(), &[1, 1, 28, 28]);
    let px = split.image(3).unwrap();
    for (o, p) in b.images.as_slice().iter().zip(px) {
        assert!((o - (*p as f32 / 255.0 - 0.2860) / 0.3530).abs() < 1e-6);
    }
    let mirrored = Loader::test(split.clone(), samples, 8, norm, aug(), true);
    let m = mirrored.epoch(0).next().unwrap().unwrap().images.into_vec();
    assert_eq!(m[5], b.images.as_slice()[22]);
    assert_eq!((b.labels, b.ids), (vec![3], vec![3]));
}

#[test]
fn loader_covers_every_sample_once_per_epoch() {
    let loader = tiny_train_loader(1);
    let batches: Vec<_> = loader.epoch(0).map(Result::unwrap).collect();
    assert_eq!(
        batches.iter().map(|b| b.labels.len()).collect::<Vec<_>>(),
        vec![16, 16, 16, 2]
    );
    let mut ids: Vec<usize> = batches.iter().flat_map(|b| b.ids.clone()).collect();
    ids.sort();
    assert_eq!(ids, (0..50).collect::<Vec<_>>());
    // Dropping an epoch early stops its producer thread cleanly.
    let mut it = loader.epoch(1);
    it.next();
    drop(it);
}

#[test]
fn exemplar_memory_quota_shrink_and_serde() {
    let mut m = ExemplarMemory::new(MemoryBudget::Total(10));
    assert_eq!(m.quota(3).unwrap(), 3);
    assert!(m
        .quota(11)
        .unwrap_err()
        .to_string()
        .contains("too small for 11 classes"));
    m.set(0, vec![5, 4, 3, 2]);
    m.set(1, vec![9, 8, 7, 6]);
    m.shrink(3);
    assert_eq!(m.class(0), &[5, 4, 3]);
    assert_eq!(
        m.samples(),
        vec![(5, 0), (4, 0), (3, 0), (9, 1), (8, 1), (7, 1)]
    );
    let json = serde_json::to_string(&m).unwrap();
    let back: ExemplarMemory = serde_json::from_str(&json).unwrap();
    assert_eq!(back, m);
    assert_eq!(
        ExemplarMemory::new(MemoryBudget::PerClass(20))
            .quota(100)
            .unwrap(),
        20
    );
}
