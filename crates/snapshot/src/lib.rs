//! berth-snapshot (work in progress).
