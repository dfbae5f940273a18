//! The LUCIR method: losses, imprinting, herding, evaluation (placeholder crate: the method is not built yet).
