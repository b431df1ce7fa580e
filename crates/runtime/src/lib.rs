//! berth-runtime (work in progress).
