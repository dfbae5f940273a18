//! Empty tensors on a CUDA device give the CPU's results (docs/design.md §5): an empty batch
//! through global average pooling, max pooling, log-softmax, cross-entropy and distillation,
//! forward and backward, gives empty tensors of the CPU's shapes and the CPU's zero losses;
//! batch norm over no channel is refused with a shape error; a label outside the logits'
//! columns is a shape error on both devices. Without a GPU each device test prints `skipped:
//! no CUDA device` and checks nothing; the CPU checks run everywhere.

use lucir::tensor::{cross_entropy, max_pool2d, Error, MaxPoolGeometry, Tensor};

/// The CPU refuses a label outside the columns (it was an out-of-bounds index) and a max pool
/// over an empty side (its windows would hold only padding).
#[test]
fn bad_labels_and_empty_pool_sides_are_refused_on_the_cpu() {
    let z = Tensor::<f32>::zeros(&[2, 3]);
    let e = cross_entropy(&z, &[0, 3]).unwrap_err();
    assert!(
        e.to_string().contains("label 3 outside the 3 classes"),
        "{e}"
    );
    let g = MaxPoolGeometry {
        kernel: 3,
        stride: 2,
        pad: 1,
    };
    let e = max_pool2d(&Tensor::<f32>::zeros(&[1, 2, 0, 4]), g).unwrap_err();
    assert!(matches!(e, Error::Argument { .. }), "{e}");
}

#[cfg(feature = "cuda")]
mod gpu_common;

#[cfg(feature = "cuda")]
mod device {
    use super::*;
    use crate::gpu_common::device;
    use lucir::tensor::{
        batch_norm_train, cross_entropy_bwd, global_avg_pool, global_avg_pool_bwd, kd, kd_bwd,
        log_softmax_rows, log_softmax_rows_bwd, max_pool2d_bwd,
    };

    /// A device result read back: its shape, and its elements equal to the CPU's.
    fn same(what: &str, got: &Tensor<f32>, want: &Tensor<f32>) {
        let got = got.to_cpu().unwrap();
        assert_eq!(got.shape(), want.shape(), "{what}");
        assert_eq!(got.as_slice(), want.as_slice(), "{what}");
    }

    #[test]
    fn empty_batches_give_the_cpu_results() {
        let Some(dev) = device() else { return };
        let up = |t: &Tensor<f32>| t.to_device(&dev).unwrap();

        let x = Tensor::<f32>::zeros(&[0, 4, 3, 3]);
        let y = global_avg_pool(&x).unwrap();
        same("global_avg_pool", &global_avg_pool(&up(&x)).unwrap(), &y);
        let dx = global_avg_pool_bwd(x.shape(), &y).unwrap();
        same(
            "global_avg_pool_bwd",
            &global_avg_pool_bwd(x.shape(), &up(&y)).unwrap(),
            &dx,
        );

        let g = MaxPoolGeometry {
            kernel: 3,
            stride: 2,
            pad: 1,
        };
        let (y, arg) = max_pool2d(&x, g).unwrap();
        let (yd, arg_d) = max_pool2d(&up(&x), g).unwrap();
        same("max_pool2d", &yd, &y);
        let dx = max_pool2d_bwd(x.shape(), &arg, g, &y).unwrap();
        let dx_d = max_pool2d_bwd(x.shape(), &arg_d, g, &up(&y)).unwrap();
        same("max_pool2d_bwd", &dx_d, &dx);

        for shape in [[0, 5], [3, 0]] {
            let z = Tensor::<f32>::zeros(&shape);
            let what = format!("log_softmax_rows {shape:?}");
            let y = log_softmax_rows(&z).unwrap();
            same(&what, &log_softmax_rows(&up(&z)).unwrap(), &y);
            let d = log_softmax_rows_bwd(&y, &z).unwrap();
            same(&what, &log_softmax_rows_bwd(&up(&y), &up(&z)).unwrap(), &d);
        }

        let z = Tensor::<f32>::zeros(&[0, 5]);
        let one = Tensor::scalar(1.0f32);
        let (loss, log_p) = cross_entropy(&z, &[]).unwrap();
        let (loss_d, log_p_d) = cross_entropy(&up(&z), &[]).unwrap();
        same("cross_entropy loss", &loss_d, &loss);
        same("cross_entropy log_p", &log_p_d, &log_p);
        let dz = cross_entropy_bwd(&log_p, &[], &one).unwrap();
        same(
            "cross_entropy_bwd",
            &cross_entropy_bwd(&log_p_d, &[], &up(&one)).unwrap(),
            &dz,
        );
        let e = cross_entropy(&up(&Tensor::zeros(&[2, 3])), &[1, 4]).unwrap_err();
        assert!(
            e.to_string().contains("label 4 outside the 3 classes"),
            "{e}"
        );

        let (loss, log_q, log_p) = kd(&z, &z, 2.0).unwrap();
        let (loss_d, log_q_d, log_p_d) = kd(&up(&z), &up(&z), 2.0).unwrap();
        same("kd loss", &loss_d, &loss);
        same("kd log_q", &log_q_d, &log_q);
        let d = kd_bwd(&log_q, &log_p, 2.0, &one).unwrap();
        same(
            "kd_bwd",
            &kd_bwd(&log_q_d, &log_p_d, 2.0, &up(&one)).unwrap(),
            &d,
        );

        let x = Tensor::<f32>::zeros(&[2, 0, 3, 3]);
        let gamma = Tensor::<f32>::zeros(&[0]);
        let refused = batch_norm_train(&up(&x), &up(&gamma), &up(&gamma), 1e-5, true);
        assert!(
            refused.is_err(),
            "batch norm over no channel ran on the device"
        );
    }
}
