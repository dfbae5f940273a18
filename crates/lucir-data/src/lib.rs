//! Dataset readers, class-incremental phases, augmentation and exemplar memory (placeholder crate: readers are not built yet).
