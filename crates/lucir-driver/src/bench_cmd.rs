//! `lucir-driver bench`: training-step throughput of a backbone on random data, printed last as
//! one JSON line (images/s, achieved GFLOP/s, peak resident memory).

use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use lucir_autograd::{ParamGroup, Sgd, Tape};
use lucir_method::Network;
use lucir_nn::{Mode, Module};
use lucir_tensor::{Device, Tensor};

use crate::config::parse_arch;
use crate::outln;
use crate::usage;

/// Options of `lucir-driver bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// resnet20, resnet32, resnet56 or resnet18.
    #[arg(long, default_value = "resnet32")]
    pub model: String,
    /// Batch size.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Input as CxHxW.
    #[arg(long, default_value = "1x28x28")]
    pub input: String,
    /// Timed steps (after 3 warm-up steps).
    #[arg(long, default_value_t = 40)]
    pub steps: usize,
    /// Worker threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// How the 3×3 stride-1 convolutions run: direct, winograd or winograd4 (as a run's
    /// `--conv`).
    #[arg(
        long,
        default_value = "direct",
        value_name = "direct|winograd|winograd4"
    )]
    pub conv: String,
    /// The number format of the 3×3 stride-1 layers' products: f32 or bf16 (as a run's
    /// `--precision`).
    #[arg(long, default_value = "f32", value_name = "f32|bf16")]
    pub precision: String,
    /// cpu, or cuda (a `--features cuda` build): where the step runs.
    #[arg(long, default_value = "cpu", value_name = "cpu|cuda")]
    pub device: String,
}

/// Peak resident set size in MiB (`VmHWM` of /proc/self/status), if readable.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Runs the benchmark.
pub fn run(args: &BenchArgs) -> Result<()> {
    if let Some(n) = args.threads {
        crate::run::set_threads(n)?;
    }
    lucir_tensor::set_conv3x3(usage(crate::config::conv3x3(&args.conv).context("--conv"))?);
    let precision = usage(crate::config::precision(&args.precision).context("--precision"))?;
    if precision == lucir_tensor::Precision::Bf16 && (args.conv != "direct" || args.device != "cpu")
    {
        return usage(Err(format!(
            "--precision bf16 runs on the CPU with its own 3×3 kernels; it does not combine \
             with --conv {} --device {}",
            args.conv, args.device
        )));
    }
    lucir_tensor::set_precision(precision);
    let arch = usage(parse_arch(&args.model).context("--model"))?;
    let dims: Option<Vec<usize>> = args.input.split('x').map(|v| v.parse().ok()).collect();
    let Some([c, h, w]) = dims.and_then(|d| <[usize; 3]>::try_from(d).ok()) else {
        return usage(Err(format!(
            "--input {:?} is not CxHxW (e.g. 1x28x28)",
            args.input
        )));
    };
    for (name, v) in [("--batch", args.batch), ("--steps", args.steps)] {
        if v == 0 {
            return usage(Err(format!("{name} must be at least 1")));
        }
    }
    if c * h * w == 0 {
        return usage(Err(format!("--input {:?} has a zero size", args.input)));
    }
    let device = match args.device.as_str() {
        "cpu" => Device::Cpu,
        "cuda" => crate::run::open_gpu()?,
        other => return usage(Err(format!("--device {other:?} is not cpu or cuda"))),
    };
    let classes = 10;
    let mut net = Network::new(arch, c, classes, true, 1)?;
    net.set_device(&device)?;
    let n = args.batch * c * h * w;
    let x = Tensor::from_vec(
        &[args.batch, c, h, w],
        (0..n)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
            .collect(),
    )?
    .to_device(&device)?;
    let labels: Vec<usize> = (0..args.batch).map(|i| i % classes).collect();
    let mut sgd = Sgd::new(0.9);
    // One step, as training runs it (`with_workers_awake_on`); returns its loss (on the device:
    // reading it waits for the step to finish).
    let mut step = || -> Result<Tensor<f32>> {
        lucir_tensor::with_workers_awake_on(&device, || {
            let mut tape = Tape::new();
            let xv = tape.constant(x.clone());
            let (_, out) = net.forward(&mut tape, xv, Mode::Train)?;
            let loss = tape.cross_entropy(out.logits, &labels)?;
            tape.backward(loss)?;
            let mut groups = [ParamGroup::named(0.1, 5e-4, net.params_mut())];
            sgd.step(&tape, &mut groups)?;
            Ok(tape.value(loss).clone())
        })
    };
    for _ in 0..3 {
        step()?.item()?;
    }
    let t0 = Instant::now();
    let mut last = None;
    for _ in 0..args.steps {
        last = Some(step()?);
    }
    if let Some(loss) = last {
        loss.item()?;
    }
    let secs = t0.elapsed().as_secs_f64();
    let images = (args.batch * args.steps) as f64;
    let flops = 3.0 * net.backbone.forward_flops(h, w) as f64 * images;
    let threads = rayon::current_num_threads();
    // On a GPU: the card's memory in use after the timed steps (every process's), in MiB.
    let gpu_mb = match &device {
        Device::Cuda(g) => g
            .memory()
            .ok()
            .map(|(used, _)| used as f64 / (1 << 20) as f64),
        Device::Cpu => None,
    };
    outln!(
        "{{\"model\":\"{}\",\"batch\":{},\"input\":\"{}\",\"device\":\"{}\",\"threads\":{threads},\"conv\":\"{}\",\"precision\":\"{}\",\"images_per_s\":{:.1},\"gflops\":{:.1},\"peak_rss_mb\":{:.1},\"gpu_mem_mb\":{}}}",
        args.model,
        args.batch,
        args.input,
        args.device,
        args.conv,
        args.precision,
        images / secs,
        flops / secs / 1e9,
        peak_rss_mb().unwrap_or(f64::NAN),
        gpu_mb.map_or("null".to_string(), |m| format!("{m:.0}"))
    )?;
    Ok(())
}
