//! The test binaries of the Winograd settings, written once: [`winograd_tests!`].

/// The tests of one Winograd setting (`$conv`, set for the whole test binary), held to the
/// relative error bound `$tol`: every layer shape, odd batches, the fused input map and
/// gradient addition, random shapes, and the setting's name in the CPU kernels'.
macro_rules! winograd_tests {
    ($conv:expr, $tol:expr) => {
        fn winograd() {
            lucir_tensor::set_conv3x3($conv);
            assert_eq!(lucir_tensor::conv3x3(), $conv);
        }

        #[test]
        fn winograd_same_convolutions_match_the_reference() {
            winograd();
            conv_cases::same_convolutions($tol);
        }

        /// Odd batches through Winograd's layers (the shared shapes' batch of 21 is a stem's,
        /// which stays direct), with images that fill a group's vectors unevenly (21 images
        /// end in a partial group), odd and even sides, channel counts off the register blocks.
        #[test]
        fn winograd_odd_batches_match_the_reference() {
            winograd();
            let shapes = [
                (21, 16, 16, 28, 28),
                (21, 32, 32, 14, 14),
                (21, 64, 64, 7, 7),
                (21, 64, 64, 8, 8),
                (3, 16, 24, 8, 8),
                (1, 17, 9, 5, 6),
                (3, 20, 33, 6, 5),
                (1, 16, 16, 1, 9),
                (2, 16, 5, 13, 11),
            ];
            conv_cases::same_shapes(&shapes, 15, $tol);
        }

        #[test]
        fn winograd_mapped_convolutions_equal_map_then_convolve() {
            winograd();
            conv_cases::mapped_convolutions();
        }

        #[test]
        fn winograd_backward_into_a_gradient_equals_adding_afterwards() {
            winograd();
            conv_cases::backward_into_a_gradient();
        }

        #[test]
        fn winograd_matches_the_reference_on_random_shapes() {
            winograd();
            // Input channels from 16, where the 3×3 stride-1 layers run Winograd's kernels.
            conv_cases::random_shapes(16..=40, $tol);
        }

        /// The setting shows in the name of the CPU kernels a run records (so a resume with
        /// another one is refused), where the CPU runs it.
        #[test]
        fn winograd_is_named_in_the_kernel_path() {
            winograd();
            let path = lucir_tensor::kernel_path();
            let name = format!("+{}", $conv.name());
            assert_eq!(path.ends_with(&name), $conv.available(), "{path}");
        }
    };
}
