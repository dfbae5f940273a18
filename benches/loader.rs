//! Loader throughput (images/s): one epoch over 10 000 Fashion-MNIST-sized images in memory
//! (1×28×28, random crop with 4-pixel padding + flip + normalisation), and one over an image
//! folder of 512 generated 500×375 JPEGs (ImageNet's typical size) streamed from disk and
//! decoded per batch — training (random resized crop 224 + flip) and testing (resize 256,
//! central 224). Batch 128.

use std::path::PathBuf;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lucir::data::{
    load, Augment, DatasetKind, FolderOptions, Loader, Normalization, Sample, Split,
};

/// Every sample of a split, labelled by its class id.
fn samples(split: &Split) -> Vec<Sample> {
    (0..split.len())
        .map(|i| Sample {
            id: i,
            label: split.labels[i],
        })
        .collect()
}

/// Images in one epoch of `loader`.
fn epoch(loader: &Loader, e: u64) -> usize {
    loader
        .epoch(e)
        .map(|b| b.expect("the benchmark's images decode").labels.len())
        .sum()
}

/// `ROOT/{train,val}/class-k/img-i.jpg`: 8 classes × `per_class` JPEGs of 500×375 (quality 90)
/// with smooth gradients and texture, in a fresh folder under the system temp dir.
fn jpeg_tree(per_class: usize) -> PathBuf {
    let root = std::env::temp_dir().join(format!("lucir-bench-jpeg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for split in ["train", "val"] {
        for class in 0..8u32 {
            let dir = root.join(split).join(format!("class-{class}"));
            std::fs::create_dir_all(&dir).expect("temp dir is writable");
            for i in 0..per_class as u32 {
                let img = image::RgbImage::from_fn(500, 375, |x, y| {
                    let t = (x * 7 + y * 13 + i * 31 + class * 97) % 256;
                    image::Rgb([(x / 2) as u8, (y * 2 / 3) as u8, (t ^ (x * y % 61)) as u8])
                });
                let path = dir.join(format!("img-{i}.jpg"));
                let mut out = std::fs::File::create(&path).expect("temp file is writable");
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
                    .encode_image(&img)
                    .expect("JPEG encodes");
            }
        }
    }
    root
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("cpu");
    group.sample_size(10);

    let n = 10_000;
    let images: Vec<u8> = (0..n * 784).map(|i| (i * 31 % 251) as u8).collect();
    let split = Arc::new(Split {
        images: images.into(),
        labels: (0..n).map(|i| i % 10).collect(),
        shape: [1, 28, 28],
    });
    let aug = Augment {
        crop: 28,
        pad: 4,
        flip: true,
    };
    let all = samples(&split);
    let loader = Loader::train(split, all, 128, Normalization::fmnist(), aug, 7);
    group.throughput(Throughput::Elements(n as u64));
    let mut e = 0;
    group.bench_function("loader_epoch_augmented/b128_1x28x28", |b| {
        b.iter(|| {
            e += 1;
            epoch(&loader, e)
        })
    });

    let root = jpeg_tree(64);
    let ds = load(DatasetKind::Folder, Some(&root), FolderOptions::default())
        .expect("the generated folder loads");
    let (train, test) = (Arc::new(ds.train), Arc::new(ds.test));
    let (tr, te) = (samples(&train), samples(&test));
    group.throughput(Throughput::Elements(tr.len() as u64));
    let loader = Loader::train(train, tr, 128, ds.norm.clone(), ds.augment, 7);
    group.bench_function("loader_folder_jpeg_train/b128_500x375_to_224", |b| {
        b.iter(|| {
            e += 1;
            epoch(&loader, e)
        })
    });
    let loader = Loader::test(test, te, 128, ds.norm, ds.augment, false);
    group.bench_function("loader_folder_jpeg_test/b128_500x375_to_224", |b| {
        b.iter(|| epoch(&loader, 0))
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&root);
}

criterion_group!(benches, bench);
criterion_main!(benches);
