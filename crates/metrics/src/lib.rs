//! berth-metrics (work in progress).
